"""Region proposals: average recall as Detectron scores RPNs on COCO, of proposals in memory
or of a proposals file (``detzoo.data.proposals``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from pycocotools.coco import COCO

from detzoo.data.proposals import Proposals, checked_proposals, load_proposals
from detzoo.evaluation.coco import _check_ids, coco_index, instances_to_coco_results, run_cocoeval
from detzoo.evaluation.types import BBOX
from detzoo.structures import Instances

_SIZES = {"s": "small", "m": "medium", "l": "large"}  # metric suffix -> COCOeval areaRngLbl


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
        for boxes, scores in (checked_proposals(i, *proposals[i]) for i in image_ids)
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
