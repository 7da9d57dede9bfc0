"""Plumbing every dense (per-anchor) head shares: the RPN (class-agnostic objectness) and
RetinaNet (per-class scores). Written once as functions, as detectron2's dense_detector:

* ``permute_to_nhwa_k``: a head's (N, A*K, H, W) map -> (N, H*W*A, K) in anchor order, fp32;
* ``anchor_targets``: the gt each anchor matches and its encoded box target;
* ``topk_candidates``: the best (anchor, class) pairs of one level, optionally above a
  score threshold;
* ``decode_level``: per level, those candidates decoded against their anchors.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor
from torchvision.ops import box_iou

from detzoo.layers.boxes import BoxCoder, Matcher
from detzoo.structures import Instances


def permute_to_nhwa_k(x: Tensor, k: int) -> Tensor:
    """(N, A*K, H, W) -> (N, H*W*A, K): channel ``a*K + k`` is value ``k`` of anchor ``a``,
    and anchors are ordered (y, x, a) as ``AnchorGenerator`` makes them. In fp32: under
    mixed precision the convs give fp16/bf16, and losses and box decoding read this."""
    n, _, h, w = x.shape
    return x.view(n, -1, k, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, k).float()


def anchor_targets(
    matcher: Matcher, box_coder: BoxCoder, anchors: Tensor, targets: Sequence[Instances]
) -> tuple[Tensor, Tensor]:
    """Per image and anchor, the matched gt index (or ``Matcher.BACKGROUND`` /
    ``Matcher.IGNORE``), shape (N, M), and the encoded gt box of that match, (N, M, 4)
    (meaningful for matched anchors only)."""
    matched, box_targets = [], []
    for t in targets:
        m = matcher.match(box_iou(t.boxes, anchors))
        gt = t.boxes[m.clamp(min=0)] if len(t) else anchors
        matched.append(m)
        box_targets.append(box_coder.encode(gt, anchors))
    return torch.stack(matched), torch.stack(box_targets)


def _at_most(k: int, n: int | Tensor) -> int | Tensor:
    """``min(k, n)`` for a count ``n``; a traced size stays a tensor (``torch.onnx.export``
    traces sizes as 0-dim tensors, and Python's ``min`` would freeze the traced one)."""
    return n.clamp(max=k) if isinstance(n, Tensor) else min(k, n)


def topk_candidates(scores: Tensor, k: int, thresh: float | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Of one image's (M, K) scores at one level, the ``k`` best (anchor, class) pairs,
    among those above ``thresh`` when given: (scores, anchor indices, class indices)."""
    flat = scores.flatten()
    if thresh is None:
        top, idx = flat.topk(_at_most(k, flat.numel()))
    else:
        above = torch.nonzero(flat > thresh).flatten()
        top, order = flat[above].topk(_at_most(k, above.numel()))
        idx = above[order]
    num_classes = scores.shape[1]
    return top, torch.div(idx, num_classes, rounding_mode="floor"), idx % num_classes


def decode_level(
    box_coder: BoxCoder, deltas: Tensor, anchors: Tensor, scores: Tensor, k: int, thresh: float | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """One image, one level: ``topk_candidates`` of ``scores`` (M, K) decoded with
    ``deltas`` (M, 4) against ``anchors`` (M, 4): (boxes (n, 4), scores (n,), classes (n,))."""
    top, anchor_idx, classes = topk_candidates(scores, k, thresh)
    boxes = box_coder.decode(deltas[anchor_idx], anchors[anchor_idx]).view(-1, 4)
    return boxes, top, classes
