"""COCO evaluation as pycocotools' COCOeval computes it (evaluate, accumulate, summarize), with
the same numbers bit for bit, vectorised with numpy in place of COCOeval's Python loops.

pycocotools spends its time in Python: ``evaluateImg`` runs once per (category, area range,
image) with a loop over IoU thresholds, detections and ground truth inside, ``accumulate`` once
per (category, area range, max dets, IoU threshold). Here

- the IoUs are computed once per (image, category): box IoU and keypoint OKS for the
  (detection, ground truth) pairs of all images at once, mask IoU with pycocotools' C
  ``mask.iou`` per (image, category), which gives the detections' mask areas too (each RLE
  is read once);
- the greedy matching goes through the detections by rank, the r-th detection of every
  (image, category) in one step, for all area ranges and IoU thresholds together;
- accumulate sorts the detections once (by category, then score) and gets precision, recall
  and scores for all categories, area ranges and IoU thresholds together, from the true
  positives alone (precision only peaks there).

Every floating-point operation is the one COCOeval (or its C code) does, in the same order, so
``eval["precision"]``, ``eval["recall"]``, ``eval["scores"]`` and ``stats`` equal COCOeval's
exactly (tests/test_fast_coco.py compares them with ``assert_array_equal``). Including its
quirks: ``iscrowd`` alone decides a ground truth's ignore flag (an ``ignore`` key is not read),
a match to a ground truth of id 0 counts as no match, and the result areas follow loadRes (box
area when the first result has a box, else mask area, else the keypoints' extent).

Unlike COCOeval, nothing is printed and neither the ground truth nor the results are modified
(loadRes writes ids and areas into the results, the segm evaluation replaces the ground truth's
polygons by RLEs); a ground truth without ``iscrowd`` is not crowd (COCOeval raises KeyError);
``useCats=0`` with keypoints is refused (COCOeval looks the OKS up under category -1 then and
matches nothing).
"""

from __future__ import annotations

import functools
import itertools
import operator
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pycocotools.mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import Params as _CocoParams

from detzoo.errors import DataError
from detzoo.evaluation.segmentation import to_rle
from detzoo.evaluation.types import BBOX, IOU_TYPES, KEYPOINTS, SEGM

_EPS = np.spacing(1)


@dataclass(frozen=True)
class Params:
    """COCOeval's evaluation parameters under its attribute names, so that code written for
    ``COCOeval.params`` reads them alike; build them with ``make_params``."""

    iouType: str
    imgIds: list[int]
    catIds: list[int]
    iouThrs: np.ndarray
    recThrs: np.ndarray
    maxDets: list[int]
    areaRng: list[list[float]]
    areaRngLbl: list[str]
    useCats: int
    kpt_oks_sigmas: np.ndarray


def make_params(
    coco_gt: COCO,
    *,
    iou_type: str,
    img_ids: Sequence[int] | None = None,
    cat_ids: Sequence[int] | None = None,
    use_cats: bool = True,
    max_dets: Sequence[int] | None = None,
    iou_thrs: Sequence[float] | None = None,
    area_rng: Sequence[Sequence[float]] | None = None,
    area_rng_lbl: Sequence[str] | None = None,
) -> Params:
    """COCOeval's defaults for ``iou_type`` (all images and categories of ``coco_gt``; IoU
    0.5:0.95, 101 recall points, its max dets and area ranges), normalised as its evaluate()
    does: image ids unique and sorted, category ids too when ``use_cats``, max dets sorted."""
    if iou_type not in IOU_TYPES:
        raise ValueError(f"unknown iou_type {iou_type!r}; valid: {', '.join(IOU_TYPES)}")
    if iou_type == KEYPOINTS and not use_cats:
        raise ValueError("use_cats=False is for 'bbox' and 'segm' (COCOeval matches no keypoints without categories)")
    base = _CocoParams(iouType=iou_type)
    cats = list(cat_ids) if cat_ids is not None else coco_gt.getCatIds()
    if len(set(cats)) != len(cats) and not use_cats:
        raise ValueError(f"cat_ids must be distinct, got {cats}")
    if (area_rng is None) != (area_rng_lbl is None) or len(area_rng or ()) != len(area_rng_lbl or ()):
        raise ValueError("area_rng and area_rng_lbl go together, one label per range")
    dets = sorted(int(m) for m in (max_dets if max_dets is not None else base.maxDets))
    if not dets or dets[0] < 1:
        raise ValueError(f"max_dets must be positive counts, got {dets}")
    return Params(
        iouType=iou_type,
        imgIds=sorted({int(i) for i in (img_ids if img_ids is not None else coco_gt.getImgIds())}),
        catIds=sorted({int(c) for c in cats}) if use_cats else [int(c) for c in cats],
        iouThrs=np.asarray(iou_thrs if iou_thrs is not None else base.iouThrs, dtype=np.float64),
        recThrs=base.recThrs,
        maxDets=dets,
        areaRng=[list(r) for r in (area_rng if area_rng is not None else base.areaRng)],
        areaRngLbl=list(area_rng_lbl if area_rng_lbl is not None else base.areaRngLbl),
        useCats=int(use_cats),
        kpt_oks_sigmas=_CocoParams(iouType=KEYPOINTS).kpt_oks_sigmas,
    )


class FastCOCOeval:
    """COCOeval's evaluate() and accumulate() of ``results`` (COCO result dicts, left
    untouched) against ``coco_gt`` under ``params``, done on construction: ``eval`` holds
    ``precision`` [T, R, K, A, M], ``recall`` [T, K, A, M] and ``scores`` [T, R, K, A, M]
    (-1 where there is no ground truth), ``stats`` summarize()'s numbers."""

    def __init__(self, coco_gt: COCO, results: Sequence[dict], params: Params) -> None:
        self.params = params
        gt = _GroundTruth(coco_gt, params)
        dt = _Detections(coco_gt, results, params, num_groups=gt.num_groups)
        pairs = _Pairs(gt, dt)
        if params.iouType == SEGM:
            ious, mask_area = _mask_ious(coco_gt, gt, dt, pairs)
            dt.area = mask_area if dt.area is None else dt.area
        else:
            ious = _pair_ious(gt, dt, pairs, params)
        self.eval = _accumulate(_match(ious, pairs, gt, dt, params), gt, dt, params)

    @functools.cached_property
    def stats(self) -> np.ndarray:
        """COCOeval.summarize()'s 12 (bbox, segm) or 10 (keypoints) numbers; -1 where no
        ground truth. The 12 need three max dets, as COCOeval's summary does."""
        p = self.params
        if p.iouType == KEYPOINTS:
            rows = [(1, None, "all"), (1, 0.5, "all"), (1, 0.75, "all"), (1, None, "medium"), (1, None, "large"),
                    (0, None, "all"), (0, 0.5, "all"), (0, 0.75, "all"), (0, None, "medium"), (0, None, "large")]
            return np.array([self._summarize(ap, thr, area, 20) for ap, thr, area in rows])  # fmt: skip
        if len(p.maxDets) < 3:
            raise ValueError(f"the summary stats need three max dets (COCOeval's [1, 10, 100]), got {p.maxDets}")
        top = p.maxDets[2]
        rows = [(1, None, "all", 100), (1, 0.5, "all", top), (1, 0.75, "all", top), (1, None, "small", top),
                (1, None, "medium", top), (1, None, "large", top), (0, None, "all", p.maxDets[0]),
                (0, None, "all", p.maxDets[1]), (0, None, "all", top), (0, None, "small", top),
                (0, None, "medium", top), (0, None, "large", top)]  # fmt: skip
        return np.array([self._summarize(*row) for row in rows])

    def _summarize(self, ap: int, iou_thr: float | None, area: str, max_dets: int) -> float:
        """One of COCOeval.summarize()'s numbers, with its very indexing (same mean)."""
        p = self.params
        aind = [i for i, label in enumerate(p.areaRngLbl) if label == area]
        mind = [i for i, m in enumerate(p.maxDets) if m == max_dets]
        s = self.eval["precision" if ap else "recall"]
        if iou_thr is not None:
            s = s[np.where(iou_thr == p.iouThrs)[0]]
        s = s[:, :, :, aind, mind] if ap else s[:, :, aind, mind]
        return float(np.mean(s[s > -1])) if (s > -1).any() else -1.0


class _GroundTruth:
    """The annotations of ``params``' images (and categories), sorted by group, i.e. (image,
    category) or image alone without categories; within a group in COCOeval's order
    (annotation order, by category first without categories)."""

    def __init__(self, coco_gt: COCO, params: Params) -> None:
        num_cats = len(params.catIds) if params.useCats else 1
        self.num_groups = len(params.imgIds) * num_cats
        img_pos = {i: n for n, i in enumerate(params.imgIds)}
        cat_pos = {c: n for n, c in enumerate(params.catIds)}
        anns = [a for a in coco_gt.dataset.get("annotations", [])
                if a["image_id"] in img_pos and a["category_id"] in cat_pos]  # fmt: skip
        cat = np.array([cat_pos[a["category_id"]] for a in anns], dtype=np.int64)
        group = np.array([img_pos[a["image_id"]] for a in anns], dtype=np.int64) * num_cats
        group += cat if params.useCats else 0
        order = np.lexsort((np.arange(len(anns)), cat, group))
        anns = [anns[i] for i in order]
        self.anns = anns
        self.group = group[order]
        self.cat = (cat[order] if params.useCats else np.zeros(len(anns), dtype=np.int64))
        self.start, self.count = _runs(self.group, self.num_groups)
        self.id = _numbers(anns, "id", np.int64, "ground-truth annotation")
        self.area = _numbers(anns, "area", np.float64, "ground-truth annotation")
        self.crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)
        ignore = self.crowd
        if params.iouType == KEYPOINTS:
            ignore = ignore | (_numbers(anns, "num_keypoints", np.int64, "ground-truth annotation") == 0)
        # COCOeval's _ignore per area range: ignored, or the area outside the range
        self.ignore = np.stack([ignore | (self.area < lo) | (self.area > hi) for lo, hi in params.areaRng])


class _Detections:
    """The results on ``params``' images (and categories), as loadRes + COCOeval see them:
    sorted by group, then score (highest first; ties in COCOeval's order), only the first
    ``maxDets[-1]`` of each group (``index`` into the results)."""

    def __init__(self, coco_gt: COCO, results: Sequence[dict], params: Params, *, num_groups: int) -> None:
        num_cats = len(params.catIds) if params.useCats else 1
        image_id = _numbers(results, "image_id", np.int64)
        seen = np.unique(image_id)
        unknown = seen[_position(seen, np.array(coco_gt.getImgIds(), dtype=np.int64)) < 0]
        if unknown.size:
            raise DataError(f"results on image ids {unknown[:10].tolist()} that are not in the ground truth")
        score = _numbers(results, "score", np.float64)
        img = _position(image_id, np.array(params.imgIds, dtype=np.int64))
        cat = _position(_numbers(results, "category_id", np.int64), np.array(params.catIds, dtype=np.int64))
        keep = np.nonzero((img >= 0) & (cat >= 0))[0]
        group = img[keep] * num_cats + (cat[keep] if params.useCats else 0)
        order = np.lexsort((keep, cat[keep], -score[keep], group))
        group = group[order]
        rank = np.arange(len(group)) - np.searchsorted(group, group)
        cut = rank < params.maxDets[-1]
        index = keep[order][cut]
        self.group, self.rank, self.score, self.img = group[cut], rank[cut], score[index], img[index]
        self.cat = cat[index] if params.useCats else np.zeros(len(index), dtype=np.int64)
        self.start, self.count = _runs(self.group, num_groups)
        self.results = [results[i] for i in index.tolist()] if params.iouType != BBOX else []  # for masks, keypoints
        # loadRes's areas: all by box when the first result has one, else by mask, else by the keypoints' extent
        first = results[0] if len(results) else {}
        by_box, by_mask = "bbox" in first and len(first["bbox"]) > 0, "segmentation" in first
        if params.iouType == BBOX or by_box:
            self.boxes = _boxes(results, "result")[index]
        if params.iouType == SEGM or (by_mask and not by_box):
            self.rles = _rles(coco_gt, self.results or [results[i] for i in index.tolist()], "result")
        if by_box:
            self.area = self.boxes[:, 2] * self.boxes[:, 3]
        elif by_mask and params.iouType == SEGM:
            self.area = None  # measured with the mask IoUs, by _mask_ious
        elif by_mask:
            self.area = _mask_areas(self.rles)
        else:
            keypoints = _keypoints(self.results, len(params.kpt_oks_sigmas), "result")
            x, y = keypoints[:, 0::3], keypoints[:, 1::3]
            self.area = (x.max(1) - x.min(1)) * (y.max(1) - y.min(1))


class _Pairs:
    """The (detection, ground truth) pairs of the groups with both, group by group, each
    group's pairs as its matrix [detection, ground truth] raveled (``start`` of each group)."""

    def __init__(self, gt: _GroundTruth, dt: _Detections) -> None:
        self.groups = np.nonzero((gt.count > 0) & (dt.count > 0))[0]
        sizes = dt.count[self.groups] * gt.count[self.groups]
        self.start = np.cumsum(sizes) - sizes
        group = np.repeat(self.groups, sizes)
        within = np.arange(sizes.sum()) - np.repeat(self.start, sizes)
        self.det = dt.start[group] + within // gt.count[group]
        self.obj = gt.start[group] + within % gt.count[group]


def _pair_ious(gt: _GroundTruth, dt: _Detections, pairs: _Pairs, params: Params) -> np.ndarray:
    """COCOeval's computeIoU ("bbox") / computeOks of the pairs, vectorised."""
    if params.iouType == BBOX:
        return _box_iou(dt.boxes[pairs.det], _boxes(gt.anns, "ground-truth annotation")[pairs.obj], gt.crowd[pairs.obj])
    return _oks(dt.results, gt, pairs.det, pairs.obj, params.kpt_oks_sigmas)


def _mask_ious(coco_gt: COCO, gt: _GroundTruth, dt: _Detections, pairs: _Pairs) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval's computeIoU ("segm") of the pairs and the detections' mask areas, reading
    each detection's RLE once: one call of pycocotools' C ``mask.iou`` per (image, category)
    with both, against its ground truth and a last column, the whole image (not crowd), whose
    IoU with a detection is its area / (h x w), so that the area is that times h x w rounded
    (exact: the error is below area x 2^-52); ``mask.area`` for the other detections and for
    any of another size than its image (IoU -1)."""
    gt_rles = _rles(coco_gt, gt.anns, "ground-truth annotation")
    crowd = gt.crowd.astype(int).tolist()
    ious, area = np.zeros(len(pairs.det)), np.full(len(dt.group), -1.0)
    whole: dict[tuple[int, int], dict] = {}  # the whole image's RLE by (h, w)
    for g, start in zip(pairs.groups.tolist(), pairs.start.tolist()):
        d0, g0, num_gt = dt.start[g], gt.start[g], gt.count[g]
        image = coco_gt.imgs[dt.results[d0]["image_id"]]
        h, w = image["height"], image["width"]
        if (h, w) not in whole:
            whole[h, w] = to_rle({"size": [h, w], "counts": [0, h * w]}, h, w)
        dts = dt.rles[d0 : d0 + dt.count[g]]
        both = np.asarray(mask_utils.iou(dts, [*gt_rles[g0 : g0 + num_gt], whole[h, w]], [*crowd[g0 : g0 + num_gt], 0]))
        ious[start : start + both[:, :-1].size] = both[:, :-1].ravel()
        area[d0 : d0 + len(dts)] = np.rint(both[:, -1] * (h * w))
    rest = np.nonzero(area < 0)[0]
    area[rest] = _mask_areas([dt.rles[i] for i in rest])
    return ious, area


def _mask_areas(rles: list[dict]) -> np.ndarray:
    """pycocotools' ``mask.area`` of the RLEs, in chunks: 256 or more fail (pycocotools 2.0.11)."""
    chunks = range(0, len(rles), 255)
    return np.array([a for i in chunks for a in mask_utils.area(rles[i : i + 255])], dtype=np.float64)


def _box_iou(d: np.ndarray, g: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """pycocotools' bbIou (C) of xywh box pairs, operation by operation: a crowd's union is the
    detection's area."""
    w = np.minimum(d[:, 2] + d[:, 0], g[:, 2] + g[:, 0]) - np.maximum(d[:, 0], g[:, 0])
    h = np.minimum(d[:, 3] + d[:, 1], g[:, 3] + g[:, 1]) - np.maximum(d[:, 1], g[:, 1])
    inter = w * h
    dt_area, gt_area = d[:, 2] * d[:, 3], g[:, 2] * g[:, 3]
    union = np.where(crowd, dt_area, dt_area + gt_area - inter)
    overlap = (w > 0) & (h > 0)
    return np.where(overlap, inter / np.where(overlap, union, 1.0), 0.0)


def _oks(results: list[dict], gt: _GroundTruth, det: np.ndarray, obj: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """COCOeval.computeOks of the pairs (det[i], obj[i]), operation by operation: over the
    ground truth's visible keypoints, or over all by their distance outside twice its box when
    none is visible; each sum over exactly those keypoints in order, as COCOeval's."""
    num = len(sigmas)
    d = _keypoints(results, num, "result")[det]
    g = _keypoints(gt.anns, num, "ground-truth annotation")[obj]
    box = _boxes(gt.anns, "ground-truth annotation")[obj]
    xg, yg, visible = g[:, 0::3], g[:, 1::3], g[:, 2::3] > 0
    xd, yd = d[:, 0::3], d[:, 1::3]
    num_visible = visible.sum(1)
    x0, x1 = box[:, :1] - box[:, 2:3], box[:, :1] + box[:, 2:3] * 2
    y0, y1 = box[:, 1:2] - box[:, 3:4], box[:, 1:2] + box[:, 3:4] * 2
    some = num_visible[:, None] > 0
    dx = np.where(some, xd - xg, np.maximum(0, x0 - xd) + np.maximum(0, xd - x1))
    dy = np.where(some, yd - yg, np.maximum(0, y0 - yd) + np.maximum(0, yd - y1))
    e = (dx**2 + dy**2) / (sigmas * 2) ** 2 / (gt.area[obj][:, None] + _EPS) / 2
    oks = np.empty(len(det))
    for n in np.unique(num_visible):
        rows = np.nonzero(num_visible == n)[0]
        used = e[rows] if n == 0 else np.take_along_axis(e[rows], np.nonzero(visible[rows])[1].reshape(-1, n), 1)
        oks[rows] = np.exp(-used).sum(axis=1) / used.shape[1]
    return oks


def _match(ious: np.ndarray, pairs: _Pairs, gt: _GroundTruth, dt: _Detections, params: Params) -> np.ndarray:
    """COCOeval.evaluateImg's greedy matching: [area range, IoU threshold, detection] -> the
    matched ground truth (index into ``gt``), or ``len(gt.id)`` for none.

    Each detection, best score first, takes the unmatched non-ignored ground truth of highest
    IoU (at least the threshold; the last of equals), or failing that the ignored one of
    highest IoU (a crowd stays unmatched for the next detections). So each ground truth gets
    a key, its rank by (IoU, position) in the detection's row, raised above all ignored ones'
    when not ignored: the match is the available candidate of largest key. Groups are
    bucketed by their number of ground truths (padded to the bucket's largest); one step
    handles the r-th detection of every group of a bucket, all area ranges and IoU thresholds
    at once, arrays [ground truth, group, area range, threshold]."""
    num_a, thresholds = len(params.areaRng), np.minimum(params.iouThrs, 1 - 1e-10)
    by_iou = np.lexsort((ious, pairs.det))  # stable: equal IoUs keep the ground truths' order
    row_start = np.searchsorted(pairs.det[by_iou], pairs.det[by_iou])
    rank = np.empty(len(ious), dtype=np.int64)
    rank[by_iou] = np.arange(len(ious)) - row_start + 1  # 1, 2, ... within each detection's row
    column_by_rank = pairs.obj[by_iou] - gt.start[dt.group[pairs.det[by_iou]]]
    out = np.full((num_a, len(thresholds), len(dt.group)), len(gt.id), dtype=np.int32)
    # buckets by powers of 4 of the ground-truth count: fewer steps than powers of 2, for a little padding
    buckets = np.ceil(np.log2(gt.count[pairs.groups]) / 2).astype(np.int64)
    for bucket in np.unique(buckets):
        members = np.nonzero(buckets == bucket)[0]
        members = members[np.argsort(-dt.count[pairs.groups[members]], kind="stable")]
        group, offset = pairs.groups[members], pairs.start[members]
        num_gt, num_dt = gt.count[group], dt.count[group]
        width = int(num_gt.max())
        column = np.minimum(np.arange(width)[:, None], num_gt - 1)  # (width, groups); padding repeats the last
        objs = gt.start[group] + column
        key_type = np.int8 if 2 * width < 2**7 else np.int16 if 2 * width < 2**15 else np.int32
        raise_by = (~gt.ignore[:, objs].transpose(1, 2, 0) * width).astype(key_type)[..., None]  # (W, groups, A, 1)
        crowd = gt.crowd[objs]
        real = (np.arange(width)[:, None] < num_gt)[..., None, None]  # padding is never free
        free = np.broadcast_to(real, (width, len(group), num_a, len(thresholds))).copy()
        for r in range(num_dt[0]):
            n = int(np.count_nonzero(num_dt > r))
            row = offset[:n] + r * num_gt[:n]
            at = row + column[:, :n]
            above = ious[at][:, :, None, None] >= thresholds
            candidate = above & free[:, :n]
            key = (candidate * (raise_by[:, :n] + rank[at][:, :, None, None].astype(key_type))).max(axis=0)
            b, a, t = np.nonzero(key)
            col = column_by_rank[row[b] + (key[b, a, t] - 1) % width]
            free[col, b, a, t] = crowd[col, b]
            out[a, t, dt.start[group[b]] + r] = gt.start[group[b]] + col
    return out


def _accumulate(match: np.ndarray, gt: _GroundTruth, dt: _Detections, params: Params) -> dict[str, np.ndarray]:
    """COCOeval.accumulate: per category, its detections of all images (each image's first
    max-dets) by score, COCOeval's ties kept, true and false positives cumulated, for all
    categories, area ranges and IoU thresholds at once.

    The interpolated precision at a recall threshold is the largest precision from the first
    detection that reaches it on. Precision drops at every detection but a true positive, so
    that is the largest over the true positives from the n-th on, n the fewest with
    n / npig >= the threshold: a running maximum over the true positives alone."""
    num_t, num_r, num_a = len(params.iouThrs), len(params.recThrs), len(params.areaRng)
    num_k = len(params.catIds) if params.useCats else 1
    shape = (num_t, num_r, num_k, num_a, len(params.maxDets))
    evaluated = {"precision": np.full(shape, -1.0), "recall": np.full((num_t, *shape[2:]), -1.0),
                 "scores": np.full(shape, -1.0)}  # fmt: skip
    npig = np.stack([np.bincount(gt.cat[~ignore], minlength=num_k) for ignore in gt.ignore], axis=1)  # (K, A)
    if not npig.any():
        return evaluated
    order = np.lexsort((dt.rank, dt.img, -dt.score, dt.cat))
    cat, rank, score = dt.cat[order], dt.rank[order], dt.score[order]
    # per area range, what a match to each ground truth (the last column: none) makes of a detection:
    # 2 ignored when the ground truth is, else 1 a true positive, 0 a false positive (unless outside
    # the area range); COCOeval stores the matched gt's id, so a match to id 0 reads as none
    outcome = np.zeros((num_a, len(gt.id) + 1), dtype=np.uint8)
    outcome[:, :-1] = np.where(gt.ignore, 2, gt.id != 0)
    # np.take per area range: 3.4 ms on coco_eval_speed.py's segm results, one 3-d index 9 ms
    outcome = np.stack([np.take(row, m) for row, m in zip(outcome, match)])[:, :, order]
    outside = np.stack([(dt.area[order] < lo) | (dt.area[order] > hi) for lo, hi in params.areaRng])[:, None, :]
    tps, fps = outcome == 1, (outcome == 0) & ~outside  # (A, T, detections by category and score)
    # only the (category, area range) pairs with ground truth are computed, the others stay -1
    gt_k, gt_a = np.nonzero(npig > 0)
    pair_npig = npig[gt_k, gt_a]
    need = np.zeros((len(pair_npig), num_r), dtype=np.int64)  # fewest true positives reaching each recall threshold
    for n in np.unique(pair_npig):
        need[pair_npig == n] = np.searchsorted(np.arange(n + 1, dtype=np.float64) / n, params.recThrs)
    need = need.T[None]  # arrays [T, R, pair] from here, as COCOeval's [T, R, K, A]
    need_one = np.maximum(need, 1)  # the n-th true positive, n >= 1 (need 0 takes the first's precision)
    for m, max_det in enumerate(params.maxDets):
        kept = slice(None) if max_det >= params.maxDets[-1] else np.nonzero(rank < max_det)[0]
        bounds = np.searchsorted(cat[kept], np.arange(num_k + 1))
        kept_fps = fps[:, :, kept]
        num_kept = kept_fps.shape[2]
        fp_sum = np.cumsum(kept_fps, axis=2, dtype=np.int32).reshape(num_a * num_t, num_kept)
        fp_before = np.zeros((num_a * num_t, num_k), dtype=np.int32)  # (A x T, K): before each category's first
        if num_kept:
            fp_before = fp_sum[:, np.maximum(bounds[:-1] - 1, 0)] * (bounds[:-1] > 0)
        # the true positives, by (area range, threshold), then detection: runs of (area, threshold, category)
        at, d = np.divmod(np.flatnonzero(tps[:, :, kept]), max(num_kept, 1))
        k = cat[kept][d]
        run = at * num_k + k
        run_start = np.searchsorted(run, np.arange(num_a * num_t * num_k + 1))
        num_tp = np.diff(run_start).reshape(num_a, num_t, num_k)
        tp = (np.arange(len(run)) - run_start[run] + 1).astype(np.float64)
        best = tp / ((fp_sum[at, d] - fp_before[at, k]) + tp + _EPS)
        step = 1
        while step < num_tp.max():  # best[i] = max(best[i:end of its run]), by doubling
            best[:-step] = np.where(run[:-step] == run[step:], np.maximum(best[:-step], best[step:]), best[:-step])
            step *= 2
        num_tp, run_start = (x.reshape(num_a, num_t, num_k)[gt_a, :, gt_k].T[:, None]
                             for x in (num_tp, run_start[:-1]))  # (T, 1, pair)  # fmt: skip
        reached = need_one <= num_tp
        nth = np.minimum(need_one, num_tp) - 1 + run_start  # (T, R, pair)
        # the score of the detection at the n-th true positive; with n = 0 the category's first
        sorted_scores = score[kept]
        first = np.where(np.diff(bounds) > 0, np.append(sorted_scores, 0.0)[bounds[:-1]], 0)[gt_k]
        at_tp = np.where(reached, sorted_scores[d[nth]], 0) if len(run) else 0.0
        evaluated["precision"][:, :, gt_k, gt_a, m] = np.where(reached, best[nth], 0) if len(run) else 0
        evaluated["scores"][:, :, gt_k, gt_a, m] = np.where(need == 0, first, at_tp)
        evaluated["recall"][:, gt_k, gt_a, m] = num_tp[:, 0] / pair_npig
    return evaluated


def _runs(sorted_keys: np.ndarray, num_keys: int) -> tuple[np.ndarray, np.ndarray]:
    """Start and length of each key's run in ``sorted_keys`` (keys 0..num_keys-1)."""
    start = np.searchsorted(sorted_keys, np.arange(num_keys))
    return start, np.diff(np.append(start, len(sorted_keys)))


def _position(values: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Index of each value in ``ids`` (distinct), or -1."""
    if not len(ids):
        return np.full(len(values), -1, dtype=np.int64)
    order = np.argsort(ids)
    at = np.minimum(np.searchsorted(ids[order], values), len(ids) - 1)
    return np.where(ids[order][at] == values, order[at], -1)


def _values(items: Sequence[dict], key: str, what: str) -> list:
    """``item[key]`` of every item; a ValueError naming the first item without it."""
    try:
        return list(map(operator.itemgetter(key), items))
    except KeyError:
        raise _missing(items, key, what) from None


def _numbers(items: Sequence[dict], key: str, dtype: type, what: str = "result") -> np.ndarray:
    try:
        return np.fromiter(map(operator.itemgetter(key), items), dtype, len(items))
    except KeyError:
        raise _missing(items, key, what) from None


def _missing(items: Sequence[dict], key: str, what: str) -> DataError:
    """The error for the first item without ``key``, named by its id, else its position."""
    index, item = next((i, item) for i, item in enumerate(items) if key not in item)
    name = f"id {item['id']}" if "id" in item else index
    return DataError(f"{what} {name} has no {key!r}")


def _boxes(items: Sequence[dict], what: str) -> np.ndarray:
    boxes = _values(items, "bbox", what)
    if set(map(len, boxes)) - {4}:
        raise DataError(f"every {what}'s bbox must be [x, y, w, h]")
    return np.fromiter(itertools.chain.from_iterable(boxes), np.float64, 4 * len(boxes)).reshape(-1, 4)


def _keypoints(items: Sequence[dict], num: int, what: str) -> np.ndarray:
    values = _values(items, "keypoints", what)
    wrong = sorted({len(v) for v in values} - {3 * num})
    if wrong:
        raise DataError(f"{what} keypoints have {wrong} values each; COCO's OKS sigmas need {3 * num}")
    return np.array(values, dtype=np.float64).reshape(len(items), 3 * num)


def _rles(coco_gt: COCO, items: Sequence[dict], what: str) -> list[dict]:
    """The items' segmentations as compressed RLEs (``to_rle``) in the size of the item's image;
    one that is a compressed RLE already is ``to_rle``'s answer itself, taken without looking
    its image up (21,650 results of coco_eval_speed.py: 6 ms, not 11)."""
    def in_its_image(segm: list | dict, item: dict) -> dict:
        image = coco_gt.imgs[item["image_id"]]
        return to_rle(segm, image["height"], image["width"])

    segms = _values(items, "segmentation", what)
    return [segm if isinstance(segm, dict) and isinstance(segm["counts"], (str, bytes)) else in_its_image(segm, item)
            for segm, item in zip(segms, items)]
