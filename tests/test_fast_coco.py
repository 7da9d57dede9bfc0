"""detzoo.evaluation.fast_coco against pycocotools' COCOeval, the reference: the same
precision, recall and scores arrays and summary stats, exactly, for boxes, masks and
keypoints, on the real COCO annotations of tests/data/coco and on random cases made to hit
COCOeval's corner cases (crowds, ties in score and IoU, empty images and categories, a
ground truth of id 0, custom parameters)."""

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from pycocotools.cocoeval import COCOeval

from detzoo.evaluation.coco import run_cocoeval
from detzoo.evaluation.fast_coco import FastCOCOeval, make_params
from devtools.coco_reference import make_coco

COCO_ANNS = Path(__file__).parent / "data" / "coco" / "annotations.json"
SIGMAS_COUNT = 17


def reference(dataset: dict, results: list[dict], iou_type: str, **params) -> COCOeval:
    """pycocotools' COCOeval with ``params`` set (COCOeval's names), evaluated, accumulated
    and, where its summary applies, summarized."""
    gt = make_coco(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = COCOeval(gt, gt.loadRes(copy.deepcopy(results)), iouType=iou_type)
        for name, value in params.items():
            setattr(coco_eval.params, name, np.array(value) if name == "iouThrs" else value)
        coco_eval.evaluate()
        coco_eval.accumulate()
        if iou_type == "keypoints" or len(coco_eval.params.maxDets) >= 3:
            coco_eval.summarize()
    return coco_eval


def fast(dataset: dict, results: list[dict], iou_type: str, **params) -> FastCOCOeval:
    names = {"imgIds": "img_ids", "catIds": "cat_ids", "useCats": "use_cats", "maxDets": "max_dets",
             "iouThrs": "iou_thrs", "areaRng": "area_rng", "areaRngLbl": "area_rng_lbl"}  # fmt: skip
    gt = make_coco(dataset)
    snapshot = copy.deepcopy(results)
    params = make_params(gt, iou_type=iou_type, **{names[k]: v for k, v in params.items()})
    evaluated = FastCOCOeval(gt, results, params)
    assert results == snapshot and gt.dataset == dataset  # nothing written into the inputs
    return evaluated


def assert_same(dataset: dict, results: list[dict], iou_type: str, **params) -> FastCOCOeval:
    expected, got = reference(dataset, results, iou_type, **params), fast(dataset, results, iou_type, **params)
    for key in ("precision", "recall", "scores"):
        np.testing.assert_array_equal(got.eval[key], expected.eval[key], err_msg=key)
    if len(expected.stats):
        np.testing.assert_array_equal(got.stats, expected.stats)
    assert got.params.maxDets == list(expected.params.maxDets)
    return got


def rle(mask: np.ndarray) -> dict:
    return text_counts(mask_utils.encode(np.asfortranarray(mask.astype(np.uint8))))


def text_counts(encoded: dict) -> dict:
    """A compressed RLE as json holds it."""
    return {**encoded, "counts": encoded["counts"].decode()}


def polygons_rle(polygons: list[list[float]], h: int, w: int) -> dict:
    return text_counts(mask_utils.merge(mask_utils.frPyObjects(polygons, h, w)))


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's crowd format: run lengths over the column-major pixels, zeros first."""
    pixels = mask.ravel(order="F").astype(np.int64)
    changes = np.flatnonzero(np.diff(pixels)) + 1
    runs = np.diff(np.concatenate([[0], changes, [len(pixels)]]))
    return {"size": list(mask.shape), "counts": ([0] if pixels[0] else []) + runs.tolist()}


def jitter(rng, box: list[float], scale: float = 0.1) -> list[float]:
    x, y, w, h = box
    dx, dy, dw, dh = rng.normal(0, scale, 4) * [w, h, w, h]
    return [x + dx, y + dy, max(w + dw, 1.0), max(h + dh, 1.0)]


def score(rng) -> float:
    """Few distinct values, so that scores tie often."""
    return float(rng.choice([0.2, 0.5, 0.5, 0.8, 0.9]))


def random_dataset(seed: int, *, masks: bool = False) -> tuple[dict, list[dict]]:
    """Images of 64-160 px with 0-6 objects of categories 1, 2, 5, 9 (9 never detected) and
    areas of every range, 1 in 5 a crowd (a box-shaped RLE mask), 1 in 6 a copy of the one
    before (ties in IoU); detections: 0-3 jittered copies per object, 1 in 5 mislabelled, and
    false positives; the last image has no ground truth, the first no detection; the first
    annotation has id 0 (COCOeval reads a match to it as none)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(64, 160, (7, 2))
    images = [{"id": 10 + i, "height": int(h), "width": int(w)} for i, (h, w) in enumerate(sizes)]
    cats = [1, 2, 5, 9]
    anns, results = [], []
    for n, image in enumerate(images):
        h, w = image["height"], image["width"]
        objects = [] if n == len(images) - 1 else range(int(rng.integers(0, 7)))
        for i in objects:
            if i == 0 or len(anns) % 6:
                bw, bh = float(rng.integers(3, w // 2 + 20)), float(rng.integers(3, h // 2 + 20))
                box = [float(rng.integers(0, w - min(bw, w - 1))), float(rng.integers(0, h - min(bh, h - 1))), bw, bh]
                label = int(rng.choice(cats))
            crowd = int(len(anns) % 5 == 2)
            ann = {"id": len(anns), "image_id": image["id"], "category_id": label, "bbox": box, "iscrowd": crowd,
                   "area": float(bw * bh * rng.uniform(0.5, 1.0))}  # fmt: skip
            x, y = box[:2]
            polygon = [x, y, x + bw, y + 0.2 * bh, x + 0.8 * bw, y + bh, x, y + bh]
            if masks:
                if crowd:
                    mask = np.zeros((h, w), dtype=bool)
                    mask[int(y) : int(y + bh), int(x) : int(x + bw)] = True
                    ann["segmentation"] = uncompressed_rle(mask)
                else:
                    ann["segmentation"] = [polygon]
                ann["area"] = float(mask_utils.area(mask_utils.frPyObjects(ann["segmentation"], h, w)).sum())
            anns.append(ann)
            if n == 0:
                continue
            for _ in range(int(rng.integers(0, 4))):
                label = ann["category_id"] if rng.random() < 0.8 else int(rng.choice(cats[:3]))
                det = {"image_id": image["id"], "category_id": label, "score": score(rng)}
                moved = jitter(rng, box)
                if masks:
                    shift = [moved[0] - x, moved[1] - y] * 4
                    det["segmentation"] = polygons_rle([[p + s for p, s in zip(polygon, shift)]], h, w)
                else:
                    det["bbox"] = moved
                results.append(det)
        for _ in range(0 if n == 0 else int(rng.integers(1, 5))):  # false positives
            bw, bh = float(rng.integers(4, w // 2)), float(rng.integers(4, h // 2))
            box = [float(rng.integers(0, w - bw)), float(rng.integers(0, h - bh)), bw, bh]
            det = {"image_id": image["id"], "category_id": int(rng.choice(cats[:3])), "score": score(rng)}
            if masks:
                mask = np.zeros((h, w), dtype=bool)
                mask[int(box[1]) : int(box[1] + bh), int(box[0]) : int(box[0] + bw)] = True
                det["segmentation"] = rle(mask)
            else:
                det["bbox"] = box
            results.append(det)
    rng.shuffle(results)
    dataset = {"images": images, "categories": [{"id": c, "name": f"c{c}"} for c in cats], "annotations": anns}
    return dataset, results


def coco_results(dataset: dict, seed: int, *, masks: bool) -> list[dict]:
    """For the real annotations: 3 jittered copies per object (1 in 4 mislabelled) and 5 false
    positives per image; masks from the jittered polygons."""
    rng = np.random.default_rng(seed)
    images = {image["id"]: image for image in dataset["images"]}
    cat_ids = [c["id"] for c in dataset["categories"]]
    results = []
    for ann in dataset["annotations"]:
        image = images[ann["image_id"]]
        for _ in range(3):
            label = ann["category_id"] if rng.random() < 0.75 else int(rng.choice(cat_ids))
            det = {"image_id": ann["image_id"], "category_id": label, "score": score(rng)}
            box = jitter(rng, ann["bbox"])
            if masks:
                shift = [box[0] - ann["bbox"][0], box[1] - ann["bbox"][1]]
                polygons = [[v + shift[i % 2] for i, v in enumerate(p)] for p in ann["segmentation"]]
                det["segmentation"] = polygons_rle(polygons, image["height"], image["width"])
            else:
                det["bbox"] = box
            results.append(det)
    for image in dataset["images"]:
        for _ in range(5):
            w, h = rng.uniform(10, 200, 2)
            x, y = rng.uniform(0, image["width"] - w), rng.uniform(0, image["height"] - h)
            det = {"image_id": image["id"], "category_id": int(rng.choice(cat_ids)), "score": float(rng.random())}
            if masks:
                mask = np.zeros((image["height"], image["width"]), dtype=bool)
                mask[int(y) : int(y + h), int(x) : int(x + w)] = True
                det["segmentation"] = rle(mask)
            else:
                det["bbox"] = [float(x), float(y), float(w), float(h)]
            results.append(det)
    return results


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_real_coco_annotations(iou_type):
    dataset = json.loads(COCO_ANNS.read_text())
    results = coco_results(dataset, 0, masks=iou_type == "segm")
    evaluated = assert_same(dataset, results, iou_type)
    assert 0.1 < evaluated.stats[0] < 0.9  # neither empty nor perfect
    assert (evaluated.eval["precision"] == -1).any() and (evaluated.eval["precision"] > 0).any()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_random_cases_default_parameters(seed, iou_type):
    dataset, results = random_dataset(seed, masks=iou_type == "segm")
    assert any(a["iscrowd"] for a in dataset["annotations"])
    evaluated = assert_same(dataset, results, iou_type)
    assert (evaluated.eval["recall"] > 0).any() and (evaluated.eval["recall"] == -1).any()


CUSTOM = {
    "no categories": {"useCats": 0},
    "no categories, proposals' max dets": {"useCats": 0, "maxDets": [2, 5, 100]},
    "max dets cut": {"maxDets": [1, 2, 3]},
    "one max dets": {"maxDets": [4]},
    "IoU thresholds": {"iouThrs": [0.05, 0.3, 0.6, 0.95, 1.0]},
    "area ranges": {"areaRng": [[0, 1e10], [0, 400], [300, 2500], [2500, 1e10]],
                    "areaRngLbl": ["all", "small", "medium", "large"]},  # fmt: skip
    "image subset": {"imgIds": [16, 11, 13, 99]},
    "category subset": {"catIds": [5, 1]},
    "categories pooled in their order": {"useCats": 0, "catIds": [5, 1, 2]},
}


@pytest.mark.parametrize("name", list(CUSTOM))
@pytest.mark.parametrize("seed", [3, 4])
def test_random_cases_custom_parameters(name, seed):
    dataset, results = random_dataset(seed)
    assert_same(dataset, results, "bbox", **CUSTOM[name])


def test_tied_ious_and_the_threshold_of_one():
    """Of equal IoUs COCOeval takes the last ground truth (here id 1; id 0 reads as no match),
    and it caps the IoU threshold 1 at 1 - 1e-10 (an IoU of 1 - 2e-11 matches)."""
    box = [10.0, 10.0, 500.0, 500.0]
    dataset = {
        "images": [{"id": 1, "height": 1000, "width": 1000}],
        "categories": [{"id": 1, "name": "c1"}],
        "annotations": [{"id": i, "image_id": 1, "category_id": 1, "bbox": box, "area": 250000.0, "iscrowd": 0}
                        for i in (0, 1)],  # fmt: skip
    }
    results = [{"image_id": 1, "category_id": 1, "bbox": [*box[:3], 500.00000001], "score": s} for s in (0.9, 0.8)]
    evaluated = assert_same(dataset, results, "bbox", iouThrs=[0.5, 1.0])
    assert evaluated.eval["precision"][1, 0, 0, 0, -1] > 0.99  # the first detection matched at IoU "1"


def test_masks_from_polygons_with_box_areas():
    """Results with a box and polygon segmentations: loadRes sizes them by box, annToRLE
    rasterises the polygons."""
    dataset, _ = random_dataset(5, masks=True)
    rng = np.random.default_rng(5)
    results = []
    for ann in dataset["annotations"]:
        box = jitter(rng, ann["bbox"])
        x, y, w, h = box
        results.append({"image_id": ann["image_id"], "category_id": ann["category_id"], "score": score(rng),
                        "bbox": box, "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]})  # fmt: skip
    assert_same(dataset, results, "segm")


def test_many_overlapping_masks():
    """One crowded image: 24 overlapping objects of two categories (1 in 4 a crowd, as an
    uncompressed RLE), 300 detections, jittered copies and random blobs, some empty, a few
    touching the border; mask IoUs, crowd IoUs (over the detection's area) and mask areas
    as pycocotools computes them."""
    rng = np.random.default_rng(7)
    h, w = 90, 120
    anns, results = [], []
    objects = []
    for i in range(24):
        mask = np.zeros((h, w), dtype=bool)
        y0, x0 = int(rng.integers(0, h - 20)), int(rng.integers(0, w - 20))
        mask[y0 : y0 + int(rng.integers(5, 40)), x0 : x0 + int(rng.integers(5, 50))] = True
        mask &= rng.random((h, w)) < 0.9  # ragged: many runs
        crowd = int(i % 4 == 1)
        ann = {"id": i + 1, "image_id": 1, "category_id": 1 + i % 2, "iscrowd": crowd, "area": float(mask.sum()),
               "bbox": [float(x0), float(y0), 1.0, 1.0],
               "segmentation": uncompressed_rle(mask) if crowd else rle(mask)}  # fmt: skip
        anns.append(ann)
        objects.append((mask, ann["category_id"]))
    for n in range(300):
        mask, label = objects[n % len(objects)]
        moved = np.roll(mask, (int(rng.integers(-6, 7)), int(rng.integers(-6, 7))), axis=(0, 1))
        if n % 10 == 9:
            moved = rng.random((h, w)) < rng.uniform(0, 0.05)  # blobs, the odd empty one
        if n % 50 == 0:
            moved = np.zeros((h, w), dtype=bool)
        results.append({"image_id": 1, "category_id": label if n % 7 else 3 - label, "score": score(rng),
                        "segmentation": rle(moved)})  # fmt: skip
    dataset = {"images": [{"id": 1, "height": h, "width": w}, {"id": 2, "height": 30, "width": 40}],
               "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}], "annotations": anns}  # fmt: skip
    evaluated = assert_same(dataset, results, "segm")
    assert 0.05 < evaluated.stats[0] < 0.95
    assert_same(dataset, results, "segm", useCats=0)


def test_mask_of_another_size_than_its_image():
    """A result RLE of another size than its image: pycocotools' mask IoU is -1 where the
    boxes overlap, its area the RLE's own."""
    dataset, results = random_dataset(1, masks=True)
    image = dataset["images"][2]
    h, w = image["height"], image["width"]
    mask = np.zeros((h + 3, w), dtype=bool)
    mask[: h // 2, : w // 2] = True
    results = [*results, {"image_id": image["id"], "category_id": 1, "score": 0.95, "segmentation": rle(mask)},
               {"image_id": image["id"], "category_id": 2, "score": 0.95, "segmentation": rle(mask)}]  # fmt: skip
    assert_same(dataset, results, "segm")


def keypoint_dataset(seed: int, *, boxes: bool) -> tuple[dict, list[dict]]:
    """People with 17 keypoints, each visible with probability 0.7 (some with none visible
    but a positive num_keypoints, some with num_keypoints 0: ignored); detections are noisy
    copies and random poses, with their box or without (then loadRes sizes them by the
    keypoints' extent)."""
    rng = np.random.default_rng(seed)
    images = [{"id": i + 1, "height": 200, "width": 200} for i in range(5)]
    anns, results = [], []
    for image in images:
        for _ in range(int(rng.integers(0, 5))):
            w, h = rng.uniform(10, 120, 2)
            x, y = rng.uniform(0, 200 - w), rng.uniform(0, 200 - h)
            xy = rng.uniform([x, y], [x + w, y + h], (SIGMAS_COUNT, 2))
            visible = (rng.random(SIGMAS_COUNT) < [0.7, 0.0, 1.0][len(anns) % 3 if len(anns) < 6 else 0]) * 2
            keypoints = np.column_stack([xy, visible])
            anns.append({"id": len(anns) + 1, "image_id": image["id"], "category_id": 1, "iscrowd": 0,
                         "bbox": [x, y, w, h], "area": float(w * h * 0.6), "keypoints": keypoints.ravel().tolist(),
                         "num_keypoints": int((visible > 0).sum()) if len(anns) != 1 else 4})  # fmt: skip
            for _ in range(int(rng.integers(0, 3))):
                noisy = np.column_stack([xy + rng.normal(0, 0.05 * max(w, h), xy.shape), rng.random(SIGMAS_COUNT)])
                det = {"image_id": image["id"], "category_id": 1, "score": score(rng),
                       "keypoints": noisy.ravel().tolist()}  # fmt: skip
                results.append({**det, "bbox": jitter(rng, [x, y, w, h])} if boxes else det)
        xy = rng.uniform(0, 200, (SIGMAS_COUNT, 2))
        det = {"image_id": image["id"], "category_id": 1, "score": score(rng),
               "keypoints": np.column_stack([xy, np.ones(SIGMAS_COUNT)]).ravel().tolist()}  # fmt: skip
        results.append({**det, "bbox": [float(xy[:, 0].min()), float(xy[:, 1].min()), 30.0, 30.0]} if boxes else det)
    dataset = {"images": images, "categories": [{"id": 1, "name": "person"}], "annotations": anns}
    return dataset, results


@pytest.mark.parametrize("boxes", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_keypoints(seed, boxes):
    dataset, results = keypoint_dataset(seed, boxes=boxes)
    assert {a["num_keypoints"] for a in dataset["annotations"]} >= {0, 17}
    evaluated = assert_same(dataset, results, "keypoints")
    assert (evaluated.eval["precision"] > 0).any()
    assert_same(dataset, results, "keypoints", maxDets=[2], iouThrs=[0.3, 0.5, 0.75])


def test_no_detections_in_the_evaluated_images():
    """Results only outside params.imgIds: every category with ground truth gets 0, as in COCOeval."""
    dataset, results = random_dataset(6)
    outside = [r for r in results if r["image_id"] == 16]
    evaluated = assert_same(dataset, outside, "bbox", imgIds=[10, 11, 12])
    assert set(np.unique(evaluated.eval["precision"])) == {-1.0, 0.0}


def test_run_cocoeval_is_cocoeval():
    """``run_cocoeval``'s parameters (proposal-style: no categories, more max dets, other IoU
    thresholds) and its ground-truth fixing (a missing area becomes the box area)."""
    dataset, results = random_dataset(7)
    del dataset["annotations"][3]["area"]
    evaluated = run_cocoeval(make_coco(dataset), results, iou_type="bbox", use_cats=False, max_dets=[100, 300, 1000],
                             iou_thrs=[0.5, 0.7])  # fmt: skip
    fixed = copy.deepcopy(dataset)
    fixed["annotations"][3]["area"] = float(np.prod(fixed["annotations"][3]["bbox"][2:]))
    expected = reference(fixed, results, "bbox", useCats=0, maxDets=[100, 300, 1000], iouThrs=[0.5, 0.7])
    for key in ("precision", "recall", "scores"):
        np.testing.assert_array_equal(evaluated.eval[key], expected.eval[key], err_msg=key)
    np.testing.assert_array_equal(evaluated.stats, expected.stats)


def test_bad_input_is_a_clear_error():
    dataset, results = random_dataset(8)
    gt = make_coco(dataset)
    params = make_params(gt, iou_type="bbox")
    with pytest.raises(ValueError, match="result 2 has no 'bbox'"):
        FastCOCOeval(gt, [*results[:2], {k: v for k, v in results[2].items() if k != "bbox"}], params)
    with pytest.raises(ValueError, match=r"results on image ids \[12345\]"):
        FastCOCOeval(gt, [{**results[0], "image_id": 12345}], params)
    with pytest.raises(ValueError, match=r"bbox must be \[x, y, w, h\]"):
        FastCOCOeval(gt, [{**results[0], "bbox": [1.0, 2.0, 3.0]}], params)
    with pytest.raises(ValueError, match="use_cats=False is for 'bbox' and 'segm'"):
        make_params(gt, iou_type="keypoints", use_cats=False)
    with pytest.raises(ValueError, match="unknown iou_type 'boxes'"):
        make_params(gt, iou_type="boxes")
    with pytest.raises(ValueError, match=r"three max dets .* got \[5\]"):
        _ = FastCOCOeval(gt, results, make_params(gt, iou_type="bbox", max_dets=[5])).stats
