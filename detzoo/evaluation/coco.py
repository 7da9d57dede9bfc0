"""COCO evaluation: predictions (``Instances`` in original image pixels) -> COCO results
json (dataset image and category ids) -> COCOeval's metrics (computed by
``detzoo.evaluation.fast_coco``, pycocotools' numbers faster) -> a dict of metrics."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path
from typing import Sequence

import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import Params

from detzoo.files import atomic_write
from detzoo.errors import DataError
from detzoo.evaluation.fast_coco import FastCOCOeval, make_params
from detzoo.evaluation.segmentation import finite_numbers, masks_to_rles, rle_problem, segmentation_problems
from detzoo.evaluation.types import BBOX, KEYPOINTS, SEGM
from detzoo.structures import Instances

_AREA_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
METRIC_NAMES: dict[str, tuple[str, ...]] = {
    BBOX: _AREA_METRICS,
    SEGM: _AREA_METRICS,
    KEYPOINTS: ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"),
}
_RESULT_FIELD = {BBOX: "bbox", SEGM: "segmentation", KEYPOINTS: "keypoints"}
_SHOWN_IDS = 5
_NUM_KEYPOINTS = len(Params(iouType=KEYPOINTS).kpt_oks_sigmas)  # COCO's 17

logger = logging.getLogger("detzoo.evaluation")


def coco_index(dataset: dict) -> COCO:
    """pycocotools' index of a COCO ``dataset`` (the dict itself, not a copy), built without
    the lines pycocotools prints."""
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def instances_to_coco_results(
    image_ids: Sequence[int], predictions: Sequence[Instances], cat_ids: Sequence[int]
) -> list[dict]:
    """One COCO result dict per detection: image_id, category_id (``cat_ids[label]``),
    bbox xywh, score, and segmentation (RLE) / keypoints (x, y, score flat) when present."""
    if len(image_ids) != len(predictions):
        raise ValueError(f"got {len(image_ids)} image ids for {len(predictions)} predictions")
    results = []
    for image_id, inst in zip(image_ids, predictions):
        if len(inst) == 0:
            continue
        if inst.scores is None:
            raise ValueError(f"predictions for image {image_id} have no scores")
        inst = inst.to("cpu")
        labels = inst.labels.tolist()
        bad = sorted({label for label in labels if not 0 <= label < len(cat_ids)})
        if bad:
            raise ValueError(f"image {image_id}: labels {bad} out of range for {len(cat_ids)} categories")
        boxes = inst.boxes.double()
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
        dets = [
            {"image_id": int(image_id), "category_id": int(cat_ids[label]), "bbox": box, "score": score}
            for label, box, score in zip(labels, xywh, inst.scores.tolist())
        ]
        if inst.masks is not None:
            if inst.masks.dtype not in (torch.bool, torch.uint8):
                raise ValueError(f"Instances.masks must be bool or uint8 binary masks, got {inst.masks.dtype}")
            for det, rle in zip(dets, masks_to_rles(inst.masks.numpy())):
                det["segmentation"] = rle
        if inst.keypoints is not None:
            for det, keypoints in zip(dets, inst.keypoints.flatten(1).tolist()):
                det["keypoints"] = keypoints
        results.extend(dets)
    return results


def write_results(path: str | Path, results: list[dict]) -> None:
    """Write COCO results as json, atomically (temp file + rename)."""
    with atomic_write(path, text=True) as f:
        json.dump(results, f)


def _check_ids(coco_gt: COCO, results: list[dict], img_ids: Sequence[int] | None) -> None:
    for key, known, given in (
        ("image_id", set(coco_gt.getImgIds()), {r["image_id"] for r in results} | set(img_ids or ())),
        ("category_id", set(coco_gt.getCatIds()), {r["category_id"] for r in results}),
    ):
        unknown = sorted(given - known)
        if unknown:
            raise DataError(
                f"{key} values {unknown[:10]} are not in the ground truth "
                f"({len(known)} known, e.g. {sorted(known)[:10]})"
            )


def prepare_results(
    coco_gt: COCO, results: list[dict], *, iou_type: str, img_ids: Sequence[int] | None = None
) -> list[dict]:
    """``results`` as ``run_cocoeval`` takes them, after a ValueError unless they can be
    evaluated as ``iou_type`` against ``coco_gt``: the result field in each, known image and
    category ids, keypoint counts. For "segm" they are copies without boxes, so that area
    ranges use the mask area (as detectron2 does)."""
    if iou_type not in METRIC_NAMES:
        raise ValueError(f"unknown iou_type {iou_type!r}; valid: {', '.join(METRIC_NAMES)}")
    field = _RESULT_FIELD[iou_type]
    missing = sum(field not in r for r in results)
    if missing:
        raise DataError(f"iou_type {iou_type!r} needs {field!r} in every result; {missing} results lack it")
    _check_ids(coco_gt, results, img_ids)
    if iou_type == KEYPOINTS:
        expected = 3 * _NUM_KEYPOINTS
        wrong = sorted({len(r["keypoints"]) for r in results} - {expected})
        if wrong:
            raise DataError(f"keypoint results have {wrong} values each; COCO's OKS sigmas need {expected}")
    if iou_type == SEGM:
        return [{key: value for key, value in r.items() if key != "bbox"} for r in results]
    return results


def evaluate_coco(
    coco_gt: COCO, results: list[dict], *, iou_type: str = BBOX, img_ids: Sequence[int] | None = None
) -> dict[str, float]:
    """COCOeval's summary stats as fractions, named as in ``METRIC_NAMES[iou_type]``.

    Empty results give all zeros; a ground truth without annotations (COCO test-dev, say)
    gives COCOeval's -1 ("-": nothing to evaluate), with a warning. For "segm" the results'
    boxes are dropped so that area ranges use the mask area (as detectron2 does).
    ``img_ids`` restricts the evaluation.
    """
    results = prepare_results(coco_gt, results, iou_type=iou_type, img_ids=img_ids)
    names = METRIC_NAMES[iou_type]
    if not coco_gt.dataset.get("annotations"):
        logger.warning("the ground truth has no annotations: nothing to evaluate (%s metrics are -)", iou_type)
        return dict.fromkeys(names, -1.0)
    if not results:
        return dict.fromkeys(names, 0.0)
    coco_eval = run_cocoeval(coco_gt, results, iou_type=iou_type, img_ids=img_ids)
    return {name: float(value) for name, value in zip(names, coco_eval.stats)}


def _evaluable(ann: dict, iou_type: str, image: dict | None) -> dict | str | None:
    """``ann`` as COCOeval can use it for ``iou_type`` (a copy if anything was filled in or
    dropped), None when it has nothing to evaluate there, or what makes its RLE unusable;
    see ``evaluable_ground_truth``. ``image``: its entry in the ground truth, if any."""
    out = ann if "area" in ann else {**ann, "area": float(ann["bbox"][2] * ann["bbox"][3])}
    if iou_type == SEGM:
        segm = ann.get("segmentation")
        if isinstance(segm, list):
            polygons = [p for p in segm if finite_numbers(p) and len(p) >= 6 and len(p) % 2 == 0]
            if not polygons:
                return None
            if len(polygons) != len(segm):
                out = {**out, "segmentation": polygons}
        elif not isinstance(segm, dict):
            return None
        else:
            return rle_problem(segm, None if image is None else (image["height"], image["width"])) or out
    if iou_type == KEYPOINTS:
        if "num_keypoints" not in ann or not ann.get("keypoints"):
            keypoints = ann.get("keypoints") or [0.0] * (3 * _NUM_KEYPOINTS)
            out = {**out, "keypoints": keypoints, "num_keypoints": sum(v > 0 for v in keypoints[2::3])}
    return out


def evaluable_ground_truth(coco_gt: COCO, iou_type: str) -> COCO:
    """``coco_gt`` itself, or a copy in which every annotation can be evaluated as
    ``iou_type`` without crashing or hanging COCOeval (bad ground truth never stops an
    evaluation): a missing ``area`` becomes the box area; for "segm", polygons of fewer
    than three points (or of values that are not numbers) are dropped, and an annotation
    left without a polygon, or with an RLE that pycocotools cannot take safely
    (``detzoo.evaluation.segmentation.rle_problem``), is left out (as training skips or
    refuses it); for "keypoints", an annotation without keypoints gets zeros, so that
    COCOeval ignores it as it ignores every person without visible keypoints (as training
    reads it: all invisible), and a missing ``num_keypoints`` counts the visible ones.
    What was left out is logged."""
    fixed, left_out, malformed = {}, [], {}
    for ann in coco_gt.dataset.get("annotations", []):
        usable = _evaluable(ann, iou_type, coco_gt.imgs.get(ann["image_id"]))
        if usable is None:
            left_out.append(ann["id"])
        elif isinstance(usable, str):
            malformed[ann["id"]] = usable
        elif usable is not ann:
            fixed[ann["id"]] = usable
    if left_out:
        logger.warning("%d ground-truth annotation(s) without a polygon of 3+ points or an RLE left out of the %s "
                       "evaluation, ids %s", len(left_out), iou_type, _some(left_out))
    if malformed:
        first = next(iter(malformed))
        logger.warning("%d ground-truth annotation(s) with an RLE pycocotools cannot take left out of the %s "
                       "evaluation, ids %s; annotation %s has %s", len(malformed), iou_type, _some(list(malformed)),
                       first, malformed[first])
    if not fixed and not left_out and not malformed:
        return coco_gt
    dropped = {*left_out, *malformed}
    return coco_index({
        **coco_gt.dataset,
        "annotations": [fixed.get(a["id"], a) for a in coco_gt.dataset["annotations"] if a["id"] not in dropped],
    })


def check_result_segmentations(coco_gt: COCO, results: Sequence[dict]) -> None:
    """A ``DataError`` for the first result whose ``segmentation`` pycocotools cannot take
    safely (``segmentation_problems`` for its image's size): results read from a file."""
    checked = [(index, result, (image["height"], image["width"])) for index, result in enumerate(results)
               if "segmentation" in result and (image := coco_gt.imgs.get(result.get("image_id"))) is not None]
    problems = segmentation_problems([result["segmentation"] for _, result, _ in checked],
                                     [size for _, _, size in checked])  # fmt: skip
    for (index, result, _), problem in zip(checked, problems):
        if problem:
            raise DataError(f"result {index} (image {result['image_id']}) has {problem}")


def _some(ids: list) -> str:
    return ", ".join(map(str, ids[:_SHOWN_IDS])) + (", ..." if len(ids) > _SHOWN_IDS else "")


def run_cocoeval(
    coco_gt: COCO,
    results: list[dict],
    *,
    iou_type: str,
    img_ids: Sequence[int] | None = None,
    use_cats: bool = True,
    max_dets: Sequence[int] | None = None,
    iou_thrs: Sequence[float] | None = None,
) -> FastCOCOeval:
    """COCOeval's evaluate and accumulate of ``results`` (COCO result dicts, left untouched;
    areas as pycocotools' loadRes gives them), by ``FastCOCOeval``: its ``eval`` holds
    ``precision``, ``recall`` and ``scores``, its ``stats`` summarize()'s numbers, its
    ``params`` COCOeval's. ``use_cats``, ``max_dets`` and ``iou_thrs`` set ``params.useCats``
    / ``params.maxDets`` / ``params.iouThrs``. The ground truth goes through
    ``evaluable_ground_truth`` first."""
    coco_gt = evaluable_ground_truth(coco_gt, iou_type)
    params = make_params(
        coco_gt, iou_type=iou_type, img_ids=img_ids, use_cats=use_cats, max_dets=max_dets, iou_thrs=iou_thrs
    )
    return FastCOCOeval(coco_gt, results, params)


def format_table(metrics: dict[str, float]) -> str:
    """Two aligned rows, names over values in percent with one decimal ("-" for COCOeval's
    -1, i.e. no ground truth in that range)."""
    cells = [(name, "-" if value < 0 else f"{100 * value:.1f}") for name, value in metrics.items()]
    widths = [max(len(name), len(value)) for name, value in cells]
    return "\n".join(
        " | ".join(cell[row].rjust(width) for cell, width in zip(cells, widths)) for row in (0, 1)
    )
