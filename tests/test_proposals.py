import contextlib
import io
import re

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detzoo.data.proposals import load_proposals, proposals_for, save_proposals
from detzoo.evaluation.coco import coco_index
from detzoo.evaluation.proposals import evaluate_proposals

IMAGES = {1: (200, 300), 2: (240, 320), 3: (180, 260), 4: (220, 220)}  # id -> (h, w); 4 gets no proposals
CATEGORIES = (1, 2, 3)  # 1 is person
SIDES = {"small": (8, 28), "medium": (36, 90), "large": (100, 150)}
RANDOM_PROPOSALS = {1: 1200, 2: 400, 3: 150}  # decoys per image, so AR@100 < AR@300 < AR@1000
NAMES = ("AR@100", "AR@300", "AR@1000", "ARs@1000", "ARm@1000", "ARl@1000")


def make_coco(anns: list[dict]) -> COCO:
    return coco_index({
        "images": [{"id": i, "height": h, "width": w} for i, (h, w) in IMAGES.items()],
        "categories": [{"id": c, "name": f"c{c}"} for c in CATEGORIES],
        "annotations": anns,
    })


def xyxy(ann: dict) -> list[float]:
    x, y, w, h = ann["bbox"]
    return [x, y, x + w, y + h]


@pytest.fixture(scope="module")
def data():
    """(annotations, proposals): every category in every size on images 1-4 and a person
    crowd region on image 2; per image jittered copies of the gt among random decoys."""
    rng = np.random.default_rng(0)
    anns = []
    for image_id, (h, w) in IMAGES.items():
        for size in ("small", "small", "medium", "medium", "large"):
            for cat in CATEGORIES:
                bw, bh = (float(v) for v in rng.integers(*SIDES[size], 2))
                x, y = float(rng.integers(0, w - bw)), float(rng.integers(0, h - bh))
                anns.append({"image_id": image_id, "category_id": cat, "bbox": [x, y, bw, bh],
                             "area": bw * bh, "iscrowd": 0})
    anns.append({"image_id": 2, "category_id": 1, "bbox": [100.0, 20.0, 80.0, 60.0], "area": 4800.0,
                 "iscrowd": 1})
    for i, ann in enumerate(anns):
        ann["id"] = i + 1
    proposals = {}
    for image_id, n_random in RANDOM_PROPOSALS.items():
        (h, w), gt_boxes = IMAGES[image_id], np.array([xyxy(a) for a in anns if a["image_id"] == image_id])
        jittered = np.repeat(gt_boxes, 2, axis=0)
        sides = np.repeat(gt_boxes[:, 2:] - gt_boxes[:, :2], 2, axis=0)
        jittered += rng.normal(0, 0.08, jittered.shape) * np.tile(sides, 2)
        corners = rng.uniform(0, 1, (n_random, 2)) * [w - 20, h - 20]
        decoys = np.hstack([corners, corners + rng.uniform(5, 150, (n_random, 2))])
        boxes = np.vstack([jittered, decoys]).astype(np.float32)
        proposals[image_id] = (boxes, rng.uniform(0, 1, len(boxes)).astype(np.float32))
    return anns, proposals


def cocoeval_ar(gt: COCO, proposals: dict, img_ids: list[int] | None = None) -> dict[str, float]:
    """COCOeval's own summary (stats 6-11) with useCats=0 and maxDets=[100, 300, 1000]."""
    dets = [{"image_id": i, "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(s)}
            for i, (boxes, scores) in proposals.items()
            for (x1, y1, x2, y2), s in zip(boxes.astype(float).tolist(), scores)]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = COCOeval(gt, gt.loadRes(dets), iouType="bbox")
        coco_eval.params.useCats = 0
        coco_eval.params.maxDets = [100, 300, 1000]
        if img_ids is not None:
            coco_eval.params.imgIds = img_ids
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return dict(zip(NAMES, coco_eval.stats[6:12].tolist()))


def test_matches_cocoeval(data):
    anns, proposals = data
    gt = make_coco(anns)
    metrics = evaluate_proposals(gt, proposals)
    assert list(metrics) == list(NAMES)
    assert metrics == pytest.approx(cocoeval_ar(gt, proposals), abs=1e-6)
    assert 0 < metrics["AR@100"] < metrics["AR@300"] < metrics["AR@1000"] < 1
    subset = evaluate_proposals(gt, proposals, img_ids=[1, 3])
    assert subset == pytest.approx(cocoeval_ar(gt, proposals, img_ids=[1, 3]), abs=1e-6)


def test_person_only(data):
    anns, proposals = data
    person = evaluate_proposals(make_coco(anns), proposals, cat_ids=[1])
    everything = evaluate_proposals(make_coco(anns), proposals)
    assert person["AR@1000"] != pytest.approx(everything["AR@1000"], abs=1e-3)
    person_gt = make_coco([a for a in anns if a["category_id"] == 1])
    assert person == pytest.approx(cocoeval_ar(person_gt, proposals), abs=1e-6)


def test_perfect_proposals(data):
    anns, _ = data
    perfect = {i: (np.array([xyxy(a) for a in anns if a["image_id"] == i and not a["iscrowd"]]),
                   np.ones(15)) for i in IMAGES}
    assert evaluate_proposals(make_coco(anns), perfect) == dict.fromkeys(NAMES, 1.0)


def test_images_without_proposals_count_as_missed(data):
    anns, proposals = data
    metrics = evaluate_proposals(make_coco(anns), proposals, img_ids=[4])
    assert metrics == dict.fromkeys(NAMES, 0.0)
    empty = {i: (np.zeros((0, 4)), np.zeros(0)) for i in IMAGES}
    assert evaluate_proposals(make_coco(anns), empty) == dict.fromkeys(NAMES, 0.0)


def test_custom_max_dets_and_missing_size(data):
    anns, proposals = data
    no_large = make_coco([a for a in anns if a["area"] < 96**2])
    metrics = evaluate_proposals(no_large, proposals, max_dets=(10, 50))
    assert list(metrics) == ["AR@10", "AR@50", "ARs@50", "ARm@50", "ARl@50"]
    assert metrics["ARl@50"] == -1.0 and 0 < metrics["AR@10"] < metrics["AR@50"]


@pytest.mark.parametrize(
    "kwargs, proposals, message",
    [
        ({}, {99: (np.zeros((0, 4)), np.zeros(0))}, r"image_id values \[99\]"),
        ({"img_ids": [77]}, {}, r"image_id values \[77\]"),
        ({"cat_ids": [1, 5]}, {}, r"cat_ids \[5\]"),
        ({"max_dets": (100, 100)}, {}, "max_dets"),
        ({}, {2: (np.zeros((3, 5)), np.zeros(3))}, r"image 2: boxes must be \(N, 4\)"),
        ({}, {3: (np.zeros((3, 4)), np.zeros(2))}, "image 3: 3 boxes but scores"),
    ],
)
def test_evaluate_errors(data, kwargs, proposals, message):
    with pytest.raises(ValueError, match=message):
        evaluate_proposals(make_coco(data[0]), proposals, **kwargs)


def test_save_load_round_trip(data, tmp_path):
    _, proposals = data
    proposals = {**proposals, 4: (np.zeros((0, 4), np.float32), np.zeros(0, np.float32))}
    path = tmp_path / "sub" / "proposals.npz"
    save_proposals(path, proposals)
    assert [p.name for p in path.parent.iterdir()] == ["proposals.npz"]  # no temp file left
    loaded = load_proposals(path)
    assert list(loaded) == list(proposals) and all(type(i) is int for i in loaded)
    for image_id, (boxes, scores) in proposals.items():
        assert loaded[image_id][0].dtype == np.float32 and loaded[image_id][1].dtype == np.float32
        np.testing.assert_array_equal(loaded[image_id][0], boxes)
        np.testing.assert_array_equal(loaded[image_id][1], scores)
    gt = make_coco(data[0])
    assert evaluate_proposals(gt, path) == evaluate_proposals(gt, proposals)


def test_save_errors(tmp_path):
    with pytest.raises(TypeError, match="'7'"):
        save_proposals(tmp_path / "p.npz", {"7": (np.zeros((1, 4)), np.zeros(1))})
    with pytest.raises(ValueError, match=r"image 5: boxes must be \(N, 4\)"):
        save_proposals(tmp_path / "p.npz", {5: (np.zeros(4), np.zeros(1))})
    assert not any(tmp_path.iterdir())


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def corrupt_zip_bytes() -> bytes:
    """A valid .npz of ``good_arrays`` with bytes of its first member overwritten."""
    buffer = io.BytesIO()
    np.savez(buffer, **good_arrays())
    data = bytearray(buffer.getvalue())
    data[60:80] = b"x" * 20
    return bytes(data)


def good_arrays() -> dict[str, np.ndarray]:
    return {"image_ids": np.array([1, 2]), "counts": np.array([2, 1]),
            "boxes": np.zeros((3, 4), np.float32), "scores": np.zeros(3, np.float32)}


@pytest.mark.parametrize(
    "write, message",
    [
        (lambda p: p.write_text("not numpy"), "not an .npz archive"),
        (lambda p: p.write_bytes(npy_bytes(np.zeros(3))), "not an .npz archive"),
        (lambda p: p.write_bytes(corrupt_zip_bytes()), "could not be read"),
        (lambda p: np.savez(p, **{**good_arrays(), "image_ids": np.array([1, None])}),
         "was refused: it holds pickled Python objects"),
        (lambda p: np.savez(p, **{k: v for k, v in good_arrays().items() if k != "scores"}),
         r"lacks arrays \['scores'\]"),
        (lambda p: np.savez(p, **{**good_arrays(), "counts": np.array([2, 2])}), "inconsistent lengths"),
        (lambda p: np.savez(p, **{**good_arrays(), "scores": np.zeros(2, np.float32)}),
         "inconsistent lengths"),
        (lambda p: np.savez(p, **{**good_arrays(), "counts": np.array([2])}), "inconsistent lengths"),
        (lambda p: np.savez(p, **{**good_arrays(), "boxes": np.zeros((3, 5), np.float32)}),
         r"boxes must be \(N, 4\)"),
        (lambda p: np.savez(p, **{**good_arrays(), "image_ids": np.array([1.0, 2.0])}),
         "image_ids must be a 1-D integer array"),
        (lambda p: np.savez(p, **{**good_arrays(), "image_ids": np.array([3, 3])}), r"image ids \[3\]"),
    ],
)
def test_load_errors(tmp_path, write, message):
    path = tmp_path / "bad.npz"
    write(path)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + message):
        load_proposals(path)


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "none.npz"))):
        load_proposals(tmp_path / "none.npz")


def test_proposals_for(data):
    _, proposals = data
    assert proposals_for(proposals, 1, path="rpn.npz") is proposals[1]
    with pytest.raises(LookupError, match="rpn.npz has no entry for image id 4"):
        proposals_for(proposals, 4, path="rpn.npz")
