import contextlib
import copy
import io
import json

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detzoo.evaluation.coco import (
    METRIC_NAMES,
    coco_index,
    evaluate_coco,
    format_table,
    instances_to_coco_results,
    write_results,
)
from detzoo.evaluation import segmentation
from detzoo.evaluation.segmentation import read_counts, rle_problems
from detzoo.structures import Instances

CAT_IDS = [1, 3, 7]  # label i <-> CAT_IDS[i]
IMAGES = {10: (120, 160), 20: (150, 200), 30: (128, 128), 40: (160, 180)}  # id -> (h, w)
SIZE_RANGES = {"small": (8, 28), "medium": (36, 90), "large": (100, 120)}


def ellipse_mask(h: int, w: int, box: tuple[float, float, float, float]) -> np.ndarray:
    """Ellipse inscribed in an xywh box, so masks differ from boxes."""
    x, y, bw, bh = box
    yy, xx = np.mgrid[:h, :w] + 0.5
    return ((xx - x - bw / 2) / (bw / 2)) ** 2 + ((yy - y - bh / 2) / (bh / 2)) ** 2 <= 1


def rle(mask: np.ndarray) -> dict:
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    encoded["counts"] = encoded["counts"].decode()
    return encoded


def random_box(rng, h, w, size):
    lo, hi = SIZE_RANGES[size]
    bw, bh = (float(v) for v in rng.integers(lo, hi, 2))
    x, y = float(rng.integers(0, w - bw)), float(rng.integers(0, h - bh))
    return x, y, bw, bh


@pytest.fixture(scope="module")
def data():
    """Ground truth (COCO) and noisy detections as rows (image_id, label, xywh, score, mask)."""
    rng = np.random.default_rng(0)
    anns, dets = [], []
    for image_id, (h, w) in IMAGES.items():
        for size in ("small", "small", "medium", "medium", "large"):
            box, label = random_box(rng, h, w, size), int(rng.integers(0, 3))
            mask = ellipse_mask(h, w, box)
            anns.append({"image_id": image_id, "category_id": CAT_IDS[label], "bbox": list(box),
                         "area": float(mask.sum()), "segmentation": rle(mask), "iscrowd": 0})
            if len(anns) % 6:  # a detection for 5 in 6, jittered to a 0.5 px grid, 1 in 7 mislabelled
                noise = rng.normal(0, 0.05, 4) * [box[2], box[3], box[2], box[3]]
                x, y, bw, bh = (round(2 * (v + n)) / 2 for v, n in zip(box, noise))
                pred_label = (label + 1) % 3 if len(anns) % 7 == 0 else label
                score = float(rng.uniform(0.3, 1))
                dets.append((image_id, pred_label, (x, y, max(bw, 1.0), max(bh, 1.0)), score))
        # false positives; a 36x36 box is medium but its ellipse (~1018 px) is small
        for box, score in ((random_box(rng, h, w, "medium"), rng.uniform(0, 0.6)),
                           ((50.0, 50.0, 36.0, 36.0), rng.uniform(0.5, 1))):
            dets.append((image_id, int(rng.integers(0, 3)), box, float(score)))
    crowd_mask = np.zeros(IMAGES[20], dtype=bool)  # a crowd region on image 20, a detection inside it
    crowd_mask[20:80, 100:180] = True
    anns.append({"image_id": 20, "category_id": 1, "bbox": [100.0, 20.0, 80.0, 60.0], "area": 4800.0,
                 "segmentation": rle(crowd_mask), "iscrowd": 1})
    dets.append((20, 0, (110.0, 30.0, 30.5, 20.0), 0.9))
    for i, ann in enumerate(anns):
        ann["id"] = i + 1
    gt = coco_index({
        "images": [{"id": i, "height": h, "width": w} for i, (h, w) in IMAGES.items()],
        "categories": [{"id": c, "name": f"c{c}"} for c in CAT_IDS],
        "annotations": anns,
    })
    dets = [(i, label, box, score, ellipse_mask(*IMAGES[i], box)) for i, label, box, score in dets]
    return gt, dets


def to_instances(dets) -> tuple[list[int], list[Instances]]:
    image_ids = sorted({d[0] for d in dets})
    predictions = []
    for image_id in image_ids:
        rows = [d for d in dets if d[0] == image_id]
        predictions.append(Instances(
            boxes=torch.tensor([[x, y, x + w, y + h] for _, _, (x, y, w, h), _, _ in rows]),
            labels=torch.tensor([r[1] for r in rows]),
            scores=torch.tensor([r[3] for r in rows]),
            masks=torch.from_numpy(np.stack([r[4] for r in rows])),
        ))
    return image_ids, predictions


def cocoeval_stats(gt: COCO, results: list[dict], iou_type: str, img_ids=None) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = COCOeval(gt, gt.loadRes(copy.deepcopy(results)), iouType=iou_type)
        if img_ids is not None:
            coco_eval.params.imgIds = img_ids
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval.stats


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_evaluate_matches_cocoeval(data, iou_type):
    gt, dets = data
    results = instances_to_coco_results(*to_instances(dets), CAT_IDS)
    snapshot = copy.deepcopy(results)
    metrics = evaluate_coco(gt, results, iou_type=iou_type)
    assert results == snapshot  # caller's list untouched by loadRes
    field = {"bbox": lambda d: {"bbox": list(d[2])}, "segm": lambda d: {"segmentation": rle(d[4])}}[iou_type]
    hand_written = [{"image_id": d[0], "category_id": CAT_IDS[d[1]], "score": d[3], **field(d)} for d in dets]
    expected = cocoeval_stats(gt, hand_written, iou_type)
    assert list(metrics) == list(METRIC_NAMES[iou_type])
    np.testing.assert_allclose(list(metrics.values()), expected, atol=1e-6)
    assert 0.2 < metrics["AP"] < 0.95  # a meaningful comparison, neither empty nor perfect
    assert all(v >= 0 for v in metrics.values())  # every area range has ground truth
    if iou_type == "segm":  # with boxes kept, loadRes would size-range detections by box area
        assert not np.allclose(cocoeval_stats(gt, results, "segm"), expected)


def test_results_fields_and_json(data):
    _, dets = data
    results = instances_to_coco_results(*to_instances(dets[:3]), CAT_IDS)
    first = results[0]
    assert set(first) == {"image_id", "category_id", "bbox", "score", "segmentation"}
    assert first["bbox"] == list(dets[0][2]) and all(type(v) is float for v in first["bbox"])
    assert first["segmentation"] == rle(dets[0][4])
    json.dumps(results)


def test_category_mapping_and_keypoints():
    inst = Instances(
        boxes=torch.tensor([[1.0, 2.0, 11.0, 22.0]]), labels=torch.tensor([1]), scores=torch.tensor([0.5]),
        keypoints=torch.tensor([[[3.0, 4.0, 0.9], [5.0, 6.0, 0.25]]]),
    )
    (result,) = instances_to_coco_results([7], [inst], CAT_IDS)
    assert result == {"image_id": 7, "category_id": 3, "bbox": [1.0, 2.0, 10.0, 20.0], "score": 0.5,
                      "keypoints": [3.0, 4.0, pytest.approx(0.9), 5.0, 6.0, 0.25]}
    with pytest.raises(ValueError, match=r"labels \[3\] out of range"):
        instances_to_coco_results([7], [Instances(inst.boxes, torch.tensor([3]), inst.scores)], CAT_IDS)


def test_keypoints_evaluation_matches_cocoeval():
    rng = np.random.default_rng(1)
    gt_kps = [np.concatenate([rng.uniform(20, 80, (17, 2)), np.full((17, 1), 2.0)], 1) for _ in range(3)]
    gt = coco_index({
        "images": [{"id": i, "height": 100, "width": 100} for i in range(3)],
        "categories": [{"id": 1, "name": "person"}],
        "annotations": [{"id": i + 1, "image_id": i, "category_id": 1, "bbox": [20.0, 20.0, 60.0, 60.0],
                         "area": 3600.0, "iscrowd": 0, "num_keypoints": 17, "keypoints": k.flatten().tolist()}
                        for i, k in enumerate(gt_kps)],
    })
    pred_kps = [k + np.concatenate([rng.normal(0, 2, (17, 2)), np.zeros((17, 1))], 1) for k in gt_kps]
    predictions = [Instances(boxes=torch.tensor([[20.0, 20.0, 80.0, 80.0]]), labels=torch.tensor([0]),
                             scores=torch.tensor([0.75]), keypoints=torch.tensor(k[None], dtype=torch.float64))
                   for k in pred_kps]
    results = instances_to_coco_results([0, 1, 2], predictions, [1])
    metrics = evaluate_coco(gt, results, iou_type="keypoints")
    assert list(metrics) == list(METRIC_NAMES["keypoints"])
    np.testing.assert_allclose(list(metrics.values()), cocoeval_stats(gt, results, "keypoints"), atol=1e-6)
    assert metrics["AP50"] > 0.5


def test_empty_results_and_restriction(data):
    gt, dets = data
    assert evaluate_coco(gt, [], iou_type="segm") == dict.fromkeys(METRIC_NAMES["segm"], 0.0)
    results = instances_to_coco_results(*to_instances(dets), CAT_IDS)
    only_10 = evaluate_coco(gt, results, img_ids=[10])
    expected = cocoeval_stats(gt, [r for r in results if r["image_id"] == 10], "bbox", img_ids=[10])
    np.testing.assert_allclose(list(only_10.values()), expected, atol=1e-6)
    assert only_10 != evaluate_coco(gt, results)


def test_errors(data):
    gt, _ = data
    det = {"image_id": 10, "category_id": 1, "bbox": [0.0, 0.0, 5.0, 5.0], "score": 0.5}
    with pytest.raises(ValueError, match=r"image_id values \[99\] are not in the ground truth"):
        evaluate_coco(gt, [det, {**det, "image_id": 99}])
    with pytest.raises(ValueError, match=r"category_id values \[2\]"):
        evaluate_coco(gt, [{**det, "category_id": 2}])
    with pytest.raises(ValueError, match=r"image_id values \[5\]"):
        evaluate_coco(gt, [det], img_ids=[5])
    with pytest.raises(ValueError, match="valid: bbox, segm, keypoints"):
        evaluate_coco(gt, [det], iou_type="proposal")
    with pytest.raises(ValueError, match="'segmentation' in every result; 1 results lack it"):
        evaluate_coco(gt, [det], iou_type="segm")


def test_write_results_and_table(tmp_path):
    results = [{"image_id": 1, "category_id": 3, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.5}]
    path = tmp_path / "sub" / "results.json"
    write_results(path, results)
    assert json.loads(path.read_text()) == results
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]
    table = format_table({"AP": 0.3791, "AP50": 0.5, "APs": -1.0})
    assert table.splitlines() == ["  AP | AP50 | APs", "37.9 | 50.0 |   -"]


def _mask_runs(mask: np.ndarray) -> list[int]:
    """The run lengths of a binary mask in column-major order, zeros first."""
    flat = mask.ravel(order="F").astype(np.int8)
    runs = np.diff(np.concatenate(([0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]))).tolist()
    return [0, *runs] if flat[0] else runs


def test_read_counts_reads_pycocotools_strings_all_at_once_and_names_what_is_unreadable(monkeypatch):
    rng = np.random.default_rng(0)
    masks = [rng.random((h, w)) < p for h, w, p in ((7, 5, 0.5), (30, 40, 0.1), (1, 1, 1.0), (64, 64, 0.0))]
    masks += [ellipse_mask(120, 160, (10, 20, 100, 60)) > 0, np.ones((40, 50), dtype=bool)]
    strings = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))["counts"] for m in masks]
    bad = ["PP", "0p", "Ooooooo1", "01\x7f", ""]
    runs, bounds, problems = read_counts([*strings[:3], *bad, *(s.decode() for s in strings[3:])])
    got = [runs[bounds[i] : bounds[i + 1]].tolist() for i in range(len(bounds) - 1)]
    for mask, counts in zip(masks, got[:3] + got[8:]):  # bytes and str; run lengths of 4096 and 2000
        assert counts == _mask_runs(mask)
    assert [read_counts(s)[1].tolist() for s in ([], [""], ["", b""])] == [[0], [0, 0], [0, 0, 0]]
    assert got[7] == [] and problems == [None] * 3 + [
        "the string ends in the middle of a run length",
        "character 'p' at 1 is not one of pycocotools' ('0' to 'o')",
        "a run length of more than 6 characters at 1",
        "character '\\x7f' at 2 is not one of pycocotools' ('0' to 'o')",
    ] + [None] * 4
    # read a few characters at a time: the same runs and problems
    monkeypatch.setattr(segmentation, "_CHUNK", 7)
    small_chunks = read_counts([*strings[:3], *bad, *(s.decode() for s in strings[3:])])
    assert np.array_equal(small_chunks[0], runs) and np.array_equal(small_chunks[1], bounds)
    assert small_chunks[2] == problems
    assert rle_problems([{"size": [7, 5], "counts": strings[0]}, {"size": [2, 2], "counts": "PP"},
                         {"size": [2, 2], "counts": "1"}, {"size": [2, 2], "counts": "04"},
                         {"size": [2, 2], "counts": "0@"}],  # "@": -32
                        [None, None, (2, 2), (3, 2), None]) == [
        None, "an RLE whose compressed counts cannot be read: the string ends in the middle of a run length",
        "an RLE whose run lengths add up to 1, not 4 (its size [2, 2])",
        "an RLE of size [2, 2], but the image is (h, w) [3, 2]",
        "an RLE whose compressed counts hold a negative run length"]
