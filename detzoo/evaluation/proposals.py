"""Region proposals: average recall as Detectron scores RPNs on COCO, and the proposals file
that ``detzoo test`` writes for an RPN and Fast R-CNN reads.

Proposals map a dataset image id to ``(boxes, scores)``: (N, 4) xyxy boxes in original image
pixels and their (N,) objectness scores.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from pycocotools.coco import COCO

from detzoo.files import atomic_write
from detzoo.errors import DataError, MissingFileError
from detzoo.evaluation.coco import _check_ids, coco_index, instances_to_coco_results, run_cocoeval
from detzoo.evaluation.types import BBOX
from detzoo.structures import Instances

Proposals = Mapping[int, tuple[np.ndarray, np.ndarray]]
_FILE_ARRAYS = ("image_ids", "counts", "boxes", "scores")
_SIZES = {"s": "small", "m": "medium", "l": "large"}  # metric suffix -> COCOeval areaRngLbl


def _checked(image_id: int, boxes: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(boxes, scores)`` as arrays after checking id and shapes; errors name the image id."""
    if not isinstance(image_id, (int, np.integer)):
        raise TypeError(f"proposals are keyed by integer image ids, got {image_id!r}")
    boxes, scores = np.asarray(boxes), np.asarray(scores)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"proposals of image {image_id}: boxes must be (N, 4), got {boxes.shape}")
    if scores.shape != (len(boxes),):
        raise ValueError(
            f"proposals of image {image_id}: {len(boxes)} boxes but scores of shape {scores.shape}"
        )
    return boxes, scores


def _restrict_categories(coco_gt: COCO, cat_ids: Sequence[int]) -> COCO:
    """The ground truth with only the annotations and categories in ``cat_ids``, all images kept.

    COCOeval with useCats = 0 loads every category's ground truth and then pools, per image,
    the gt *and the detections* whose category is in params.catIds; restricting the gt itself
    keeps "only these categories count" explicit and independent of how proposals are labelled.
    """
    unknown = sorted(set(cat_ids) - set(coco_gt.getCatIds()))
    if unknown:
        raise ValueError(
            f"cat_ids {unknown} are not in the ground truth (its categories: {coco_gt.getCatIds()})"
        )
    keep = set(cat_ids)
    return coco_index({
        **coco_gt.dataset,
        "categories": [c for c in coco_gt.dataset["categories"] if c["id"] in keep],
        "annotations": [a for a in coco_gt.dataset.get("annotations", []) if a["category_id"] in keep],
    })


def _mean_recall(recall: np.ndarray) -> float:
    """Mean over the entries that are not COCOeval's -1 (no ground truth); -1 if none are."""
    valid = recall[recall > -1]
    return float(valid.mean()) if valid.size else -1.0


def evaluate_proposals(
    coco_gt: COCO,
    proposals: Proposals | str | Path,
    *,
    max_dets: Sequence[int] = (100, 300, 1000),
    cat_ids: Sequence[int] | None = None,
    img_ids: Sequence[int] | None = None,
) -> dict[str, float]:
    """Average recall of proposals (or of a proposals file) as fractions: ``AR@k`` for each k
    in ``max_dets`` and ``ARs/ARm/ARl@max(max_dets)`` per object size.

    COCOeval "bbox" with ``useCats = 0`` and ``maxDets = max_dets``: recall over IoU 0.5:0.95
    of each image's k highest-scoring proposals, labels ignored, crowd gt ignored; -1 means no
    gt in that size range. Ground-truth images without proposals count as nothing found; no
    proposals at all give zeros. ``cat_ids`` (e.g. ``[1]`` for a person-only RPN) evaluates
    against the gt of those categories only; ``img_ids`` restricts the evaluation.
    """
    if isinstance(proposals, (str, Path)):
        proposals = load_proposals(proposals)
    if not max_dets or min(max_dets) < 1 or len(set(max_dets)) != len(max_dets):
        raise ValueError(f"max_dets must be distinct positive counts, got {list(max_dets)}")
    if cat_ids is not None:
        coco_gt = _restrict_categories(coco_gt, cat_ids)
    top = max(max_dets)
    cells = {f"AR@{k}": ("all", k) for k in max_dets}
    cells |= {f"AR{suffix}@{top}": (area, top) for suffix, area in _SIZES.items()}
    image_ids = list(proposals)
    predictions = [
        Instances(
            boxes=torch.as_tensor(boxes),
            labels=torch.zeros(len(boxes), dtype=torch.int64),
            scores=torch.as_tensor(scores),
        )
        for boxes, scores in (_checked(i, *proposals[i]) for i in image_ids)
    ]
    # Labelled with one gt category: with useCats = 0 COCOeval pools per image the detections
    # of all params.catIds (the gt's categories), so any of them counts and labels don't matter.
    results = instances_to_coco_results(image_ids, predictions, cat_ids=coco_gt.getCatIds()[:1])
    _check_ids(coco_gt, results, [*image_ids, *(img_ids or ())])  # also ids whose proposals are empty
    if not results:
        return dict.fromkeys(cells, 0.0)
    coco_eval = run_cocoeval(
        coco_gt, results, iou_type=BBOX, img_ids=img_ids, use_cats=False, max_dets=max_dets
    )
    recall = coco_eval.eval["recall"][:, 0]  # (IoU thresholds, area ranges, max dets)
    params = coco_eval.params
    return {
        name: _mean_recall(recall[:, params.areaRngLbl.index(area), params.maxDets.index(k)])
        for name, (area, k) in cells.items()
    }


def save_proposals(path: str | Path, proposals: Proposals) -> None:
    """Write proposals atomically to a compressed .npz: ``image_ids`` and ``counts`` (M,) int64,
    then all images' ``boxes`` (sum, 4) and ``scores`` (sum,) as float32, in that order."""
    image_ids = list(proposals)
    checked = [_checked(i, *proposals[i]) for i in image_ids]
    with atomic_write(path) as f:
        np.savez_compressed(
            f,
            image_ids=np.array(image_ids, dtype=np.int64),
            counts=np.array([len(boxes) for boxes, _ in checked], dtype=np.int64),
            boxes=np.concatenate([np.zeros((0, 4)), *(boxes for boxes, _ in checked)]).astype(np.float32),
            scores=np.concatenate([np.zeros(0), *(scores for _, scores in checked)]).astype(np.float32),
        )


def _layout_problem(
    image_ids: np.ndarray, counts: np.ndarray, boxes: np.ndarray, scores: np.ndarray
) -> str | None:
    """What is wrong with a proposals file's arrays, or None."""
    for name, array in (("image_ids", image_ids), ("counts", counts)):
        if array.ndim != 1 or array.dtype.kind not in "iu":
            return f"{name} must be a 1-D integer array, got shape {array.shape} of {array.dtype}"
    if boxes.ndim != 2 or boxes.shape[1] != 4 or boxes.dtype.kind != "f":
        return f"boxes must be (N, 4) floats, got shape {boxes.shape} of {boxes.dtype}"
    if scores.ndim != 1 or scores.dtype.kind != "f":
        return f"scores must be (N,) floats, got shape {scores.shape} of {scores.dtype}"
    if len(counts) != len(image_ids) or (counts < 0).any() or not counts.sum() == len(boxes) == len(scores):
        return (
            f"inconsistent lengths: {len(image_ids)} image_ids, {len(counts)} counts summing to "
            f"{counts.sum()}, {len(boxes)} boxes, {len(scores)} scores"
        )
    ids, occurrences = np.unique(image_ids, return_counts=True)
    if (occurrences > 1).any():
        return f"image ids {ids[occurrences > 1][:10].tolist()} appear more than once"
    return None


def load_proposals(path: str | Path) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Read a file written by ``save_proposals`` (never unpickles); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"proposals file not found: {path}")
    if not zipfile.is_zipfile(path):
        raise DataError(f"proposals file {path} is not an .npz archive (not a zip file)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in _FILE_ARRAYS if key in npz.files}
            not_arrays = [key for key, value in arrays.items() if not isinstance(value, np.ndarray)]
    except Exception as e:  # numpy/zipfile raise many types for a bad file; all mean the same here
        if "allow_pickle" in str(e):  # numpy's refusal of an object array, which unpickling would build
            raise DataError(
                f"proposals file {path} was refused: it holds pickled Python objects, which loading would run "
                "(a malicious file?); detzoo reads only numeric arrays from it"
            ) from e
        raise DataError(f"proposals file {path} could not be read (corrupt?): {type(e).__name__}: {e}") from e
    if not_arrays:  # an archive member without the .npy format: numpy hands back its bytes
        raise DataError(f"proposals file {path}: member(s) {not_arrays} are not numpy arrays (.npy)")
    missing = [key for key in _FILE_ARRAYS if key not in arrays]
    if missing:
        raise DataError(f"proposals file {path} lacks arrays {missing}; it needs {list(_FILE_ARRAYS)}")
    image_ids, counts, boxes, scores = (arrays[key] for key in _FILE_ARRAYS)
    problem = _layout_problem(image_ids, counts, boxes, scores)
    if problem:
        raise DataError(f"proposals file {path}: {problem}")
    ends = np.cumsum(counts)
    return {
        image_id: (boxes[end - count : end], scores[end - count : end])
        for image_id, count, end in zip(image_ids.tolist(), counts.tolist(), ends.tolist())
    }


def proposals_for(proposals: Proposals, image_id: int, *, path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The ``(boxes, scores)`` of one image; ``path`` is the proposals file, named in the error
    raised when the image has no entry."""
    if image_id not in proposals:
        raise LookupError(
            f"proposals file {path} has no entry for image id {image_id} ({len(proposals)} images "
            "there); write it with `detzoo test` of an RPN on this same dataset"
        )
    return proposals[image_id]
