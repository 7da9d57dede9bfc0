"""Comparing two toolboxes' (or backends') detections of the same network, as
``Detector.predict`` gives them (numpy ``boxes``, ``scores``, ``labels`` and optional
``masks`` / ``keypoints``).

Two computations of the same network in different orders (folded BN, channels-last,
another library's kernels) agree to float rounding, about 1e-5 of a value. Detections are
paired by label, box and score rather than by position, since two whose scores tie to
rounding may come in either order; and those within rounding of the lowest kept score may
be on either side of the cut (the score threshold, or the cap on detections per image),
so they are left out of the comparison."""

from __future__ import annotations

import numpy as np

BOX_ATOL = 5e-2  # px: 1e-5 of a coordinate, amplified by the exp of the box deltas
SCORE_ATOL = 1e-3


def pairing(ours: dict, theirs: dict, *, box_atol: float = BOX_ATOL, score_atol: float = SCORE_ATOL) -> np.ndarray:
    """For each detection of ``theirs``, the index of the one of ``ours`` with the same
    label, its box within ``box_atol`` and its score within ``score_atol``, each used once,
    the nearest position first."""
    free, order = set(range(len(ours["boxes"]))), []
    for i, (box, score, label) in enumerate(zip(theirs["boxes"], theirs["scores"], theirs["labels"])):
        match = next((j for j in sorted(free, key=lambda j: abs(j - i))
                      if ours["labels"][j] == label and abs(ours["scores"][j] - score) <= score_atol
                      and np.abs(ours["boxes"][j] - box).max() <= box_atol), None)
        if match is None:
            same = np.flatnonzero(ours["labels"] == label)
            gaps = np.abs(ours["boxes"][same] - box).max(1) if len(same) else np.array([np.inf])
            j = same[gaps.argmin()] if len(same) else None
            nearest = "none" if j is None else f"{gaps.min():.3g} px, score {ours['scores'][j]:.6g}"
            raise AssertionError(f"detection {i} (label {label}, score {score:.6g}, box {box}) has no twin; "
                                 f"the nearest of its label: {nearest}")
        free.remove(match)
        order.append(match)
    return np.asarray(order, dtype=np.int64)


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of each pair of (N, H, W) bool masks; 1 where both are empty."""
    inter = (a & b).sum((1, 2))
    union = (a | b).sum((1, 2))
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def _select(dets: dict, keep: np.ndarray) -> dict:
    return {k: [v[j] for j in keep] if isinstance(v, list) else v[keep] for k, v in dets.items()}


def assert_same_detections(
    ours: dict, theirs: dict, *, box_atol: float = BOX_ATOL, score_atol: float = SCORE_ATOL
) -> int:
    """``ours`` equal ``theirs`` to rounding: each of theirs above the cut (see the module;
    more than ``2 * score_atol`` above the lowest score) paired with its twin in ours, and
    ours without one at the cut (within ``3 * score_atol``); twins have equal labels, boxes
    within ``box_atol`` px and scores within ``score_atol``; masks: each IoU >= 0.9 and at
    most 0.1% of all mask pixels on different sides of 0.5; keypoints: at most 1% more than
    ``box_atol`` apart (a heatmap whose best two cells tie decodes at either), their scores
    (heatmap logits) within ``score_atol`` of 1 + their size.
    Returns how many detections were compared."""
    lowest = min([*ours["scores"], *theirs["scores"]], default=0.0)
    theirs = _select(theirs, np.flatnonzero(theirs["scores"] > lowest + 2 * score_atol))
    order = pairing(ours, theirs, box_atol=box_atol, score_atol=score_atol)
    left = np.setdiff1d(np.arange(len(ours["boxes"])), order)
    assert (ours["scores"][left] <= lowest + 3 * score_atol).all(), f"detections {left} of ours have no twin"
    ours = _select(ours, order)
    np.testing.assert_array_equal(ours["labels"], theirs["labels"])
    np.testing.assert_allclose(ours["boxes"], theirs["boxes"], rtol=0, atol=box_atol)
    np.testing.assert_allclose(ours["scores"], theirs["scores"], rtol=0, atol=score_atol)
    if "masks" in theirs:
        assert ours["masks"].dtype == bool and ours["masks"].shape == theirs["masks"].shape
        iou = mask_iou(ours["masks"], theirs["masks"])
        apart = (ours["masks"] ^ theirs["masks"]).sum()
        union = (ours["masks"] | theirs["masks"]).sum()
        assert iou.min(initial=1.0) >= 0.9 and apart <= 1e-3 * union, (iou.min(initial=1.0), apart, union)
    if "keypoints" in theirs:
        far = np.abs(ours["keypoints"][..., :2] - theirs["keypoints"][..., :2]).max(-1) > box_atol
        assert far.sum() <= 0.01 * far.size, f"{far.sum()} of {far.size} keypoints apart"
        # keypoint scores are heatmap logits (about -10 to 10), not probabilities: rounding scales with them
        np.testing.assert_allclose(ours["keypoints"][..., 2], theirs["keypoints"][..., 2], rtol=score_atol,
                                   atol=score_atol)
    return len(theirs["boxes"])
