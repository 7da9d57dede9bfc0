"""Box encoding, matching, sampling and per-image selection (clip, filter, NMS, top N)
shared by the RPN, RetinaNet and the RoI heads."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor
from torchvision.ops import batched_nms


class BoxCoder:
    """Encodes boxes as (dx, dy, dw, dh) deltas relative to reference boxes, scaled by
    ``weights`` (RPN: 1, 1, 1, 1; RoI heads: 10, 10, 5, 5). dw/dh are clamped at
    ``log(1000/16)`` when decoding, as in Detectron, detectron2 and torchvision; with
    ``clamp_shrink`` also at ``-log(1000/16)``, as mmdetection does."""

    def __init__(
        self, weights: Sequence[float], clip: float = math.log(1000.0 / 16), *, clamp_shrink: bool = False
    ) -> None:
        self.weights = tuple(float(w) for w in weights)
        self.clip = clip
        self.min_clip = -clip if clamp_shrink else None

    def encode(self, gt: Tensor, reference: Tensor) -> Tensor:
        wx, wy, ww, wh = self.weights
        ref_w = reference[:, 2] - reference[:, 0]
        ref_h = reference[:, 3] - reference[:, 1]
        ref_x = reference[:, 0] + 0.5 * ref_w
        ref_y = reference[:, 1] + 0.5 * ref_h
        gt_w = gt[:, 2] - gt[:, 0]
        gt_h = gt[:, 3] - gt[:, 1]
        gt_x = gt[:, 0] + 0.5 * gt_w
        gt_y = gt[:, 1] + 0.5 * gt_h
        return torch.stack(
            (
                wx * (gt_x - ref_x) / ref_w,
                wy * (gt_y - ref_y) / ref_h,
                ww * torch.log(gt_w / ref_w),
                wh * torch.log(gt_h / ref_h),
            ),
            dim=1,
        )

    def decode(self, deltas: Tensor, reference: Tensor) -> Tensor:
        """``deltas`` (N, 4*C) against ``reference`` (N, 4) -> boxes (N, C, 4)."""
        reference = reference.to(deltas.dtype)
        wx, wy, ww, wh = self.weights
        widths = reference[:, 2] - reference[:, 0]
        heights = reference[:, 3] - reference[:, 1]
        ctr_x = reference[:, 0] + 0.5 * widths
        ctr_y = reference[:, 1] + 0.5 * heights
        # strided columns, not a reshape to (N, C, 4): an ONNX Reshape cannot infer C when N is 0
        dx = deltas[:, 0::4] / wx
        dy = deltas[:, 1::4] / wy
        dw = (deltas[:, 2::4] / ww).clamp(min=self.min_clip, max=self.clip)
        dh = (deltas[:, 3::4] / wh).clamp(min=self.min_clip, max=self.clip)
        pred_x = dx * widths[:, None] + ctr_x[:, None]
        pred_y = dy * heights[:, None] + ctr_y[:, None]
        half_w = 0.5 * (torch.exp(dw) * widths[:, None])
        half_h = 0.5 * (torch.exp(dh) * heights[:, None])
        return torch.stack((pred_x - half_w, pred_y - half_h, pred_x + half_w, pred_y + half_h), dim=2)


def clip_boxes(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Clamp xyxy boxes (..., 4) into an image of ``size`` (h, w)."""
    h, w = size
    x = boxes[..., 0::2].clamp(min=0, max=w)
    y = boxes[..., 1::2].clamp(min=0, max=h)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


def nonsmall(boxes: Tensor, min_size: float) -> Tensor:
    """Boolean mask of boxes whose width and height are both >= ``min_size``."""
    return ((boxes[:, 2] - boxes[:, 0]) >= min_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_size)


def select_boxes(
    boxes: Tensor,
    scores: Tensor,
    groups: Tensor,
    *,
    image_size: tuple[int, int],
    min_size: float,
    nms_thresh: float,
    max_count: int,
    score_thresh: float | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One image's post-processing, the same for proposals and detections: ``boxes`` (n, 4)
    clipped to ``image_size`` (h, w); those scoring at most ``score_thresh`` (when given)
    and those smaller than ``min_size`` dropped; NMS at ``nms_thresh`` within each of
    ``groups`` (n,) (the RPN's levels, the classes of a detector); the ``max_count`` best.
    Returns the kept boxes, scores and groups, best first."""
    boxes = clip_boxes(boxes, image_size)
    if score_thresh is not None:
        keep = torch.nonzero(scores > score_thresh).flatten()
        boxes, scores, groups = boxes[keep], scores[keep], groups[keep]
    keep = nonsmall(boxes, min_size)
    boxes, scores, groups = boxes[keep], scores[keep], groups[keep]
    keep = batched_nms(boxes, scores, groups, nms_thresh)[:max_count]
    return boxes[keep], scores[keep], groups[keep]


class Matcher:
    """Assigns each prediction the ground truth it overlaps most.

    ``match(iou)`` with ``iou`` of shape (num_gt, num_pred) returns, per prediction, the
    matched gt index, ``BACKGROUND`` (-1, best IoU below ``low``) or ``IGNORE`` (-2, in
    ``[low, high)``). With ``allow_low_quality``, predictions that are some gt's best match
    (ties included) keep their gt whatever the IoU (RPN's rule in all toolboxes)."""

    BACKGROUND = -1
    IGNORE = -2

    def __init__(self, high: float, low: float, allow_low_quality: bool) -> None:
        if low > high:
            raise ValueError(f"Matcher: low threshold {low} is above high threshold {high}")
        self.high, self.low, self.allow_low_quality = high, low, allow_low_quality

    def match(self, iou: Tensor) -> Tensor:
        if iou.shape[0] == 0:
            return torch.full((iou.shape[1],), self.BACKGROUND, dtype=torch.int64, device=iou.device)
        best, matches = iou.max(dim=0)
        result = matches.clone()
        result[best < self.low] = self.BACKGROUND
        result[(best >= self.low) & (best < self.high)] = self.IGNORE
        if self.allow_low_quality:
            best_per_gt = iou.max(dim=1).values
            _, pred_idx = torch.nonzero(iou == best_per_gt[:, None], as_tuple=True)
            result[pred_idx] = matches[pred_idx]
        return result


def sample_balanced(
    is_fg: Tensor, is_bg: Tensor, *, num_samples: int, positive_fraction: float
) -> tuple[Tensor, Tensor]:
    """Random subset of at most ``num_samples`` indices, at most ``positive_fraction``
    of them foreground, the rest filled with background. Returns (fg_idx, bg_idx)."""
    fg = torch.nonzero(is_fg).flatten()
    bg = torch.nonzero(is_bg).flatten()
    num_fg = min(int(num_samples * positive_fraction), fg.numel())
    num_bg = min(num_samples - num_fg, bg.numel())
    fg = fg[torch.randperm(fg.numel(), device=fg.device)[:num_fg]]
    bg = bg[torch.randperm(bg.numel(), device=bg.device)[:num_bg]]
    return fg, bg
