"""Mask R-CNN mask targets, loss and pasting.

Targets are the ground-truth masks RoIAligned to each box; the loss is per-pixel binary
cross-entropy on the box's class channel. At test time the S x S probabilities go into
the image by one of two conventions (``PASTES``): torchvision's (padded, resized
bilinearly to the integer, slightly expanded box, pasted) or detectron2 / mmdetection's
(each image pixel centre sampled bilinearly from the mask at its position in the
floating-point box, ``grid_sample``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import roi_align


def _check_boxes(boxes: Tensor, n: int, name: str) -> None:
    if boxes.shape != (n, 4):
        raise ValueError(f"{name}: boxes must be ({n}, 4), got {tuple(boxes.shape)}")


def mask_targets(gt_masks: Tensor, boxes: Tensor, *, size: int, aligned: bool = False) -> Tensor:
    """(N, H, W) full-image masks matched to (N, 4) xyxy pixel boxes -> (N, size, size)
    float targets. ``aligned=False`` is torchvision's RoIAlign, True detectron2's; the
    sampling ratio is adaptive in both.

    torchvision's ``roi_align`` here, not ``detzoo.layers.roi_pool.roi_align``: one channel
    at image resolution, with adaptive grids of up to ~20 x 20 samples per bin for large
    boxes, is where the latter's per-entry index arithmetic outweighs its gather (it pays off
    over many channels), and targets need no gradient."""
    if gt_masks.dim() != 3:
        raise ValueError(f"mask_targets: gt_masks must be (N, H, W), got {tuple(gt_masks.shape)}")
    _check_boxes(boxes, gt_masks.shape[0], "mask_targets")
    index = torch.arange(boxes.shape[0], dtype=boxes.dtype, device=boxes.device)
    rois = torch.cat([index[:, None], boxes], dim=1)
    masks = gt_masks[:, None].to(rois)
    return roi_align(masks, rois, (size, size), spatial_scale=1.0, sampling_ratio=0, aligned=aligned)[:, 0]


def mask_loss(logits: Tensor, labels: Tensor, targets: Tensor) -> Tensor:
    """Mean per-pixel BCE of (N, C, S, S) ``logits`` on each RoI's ``labels`` channel
    against (N, S, S) ``targets``; zero (kept in the graph) when N == 0."""
    if logits.dim() != 4 or targets.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"mask_loss: logits (N, C, S, S) {tuple(logits.shape)} and targets (N, S, S) "
            f"{tuple(targets.shape)} do not match"
        )
    if labels.shape != (logits.shape[0],):
        raise ValueError(f"mask_loss: labels must be ({logits.shape[0]},), got {tuple(labels.shape)}")
    if targets.numel() == 0:
        return logits.sum() * 0
    index = torch.arange(labels.shape[0], device=labels.device)
    return F.binary_cross_entropy_with_logits(logits[index, labels], targets)


def _expand_boxes(boxes: Tensor, scale: float) -> Tensor:
    """Scale xyxy boxes about their centres."""
    w_half = (boxes[:, 2] - boxes[:, 0]) * 0.5 * scale
    h_half = (boxes[:, 3] - boxes[:, 1]) * 0.5 * scale
    x_c = (boxes[:, 2] + boxes[:, 0]) * 0.5
    y_c = (boxes[:, 3] + boxes[:, 1]) * 0.5
    return torch.stack([x_c - w_half, y_c - h_half, x_c + w_half, y_c + h_half], dim=1)


def paste_masks(
    masks: Tensor, boxes: Tensor, image_size: tuple[int, int], *, convention: str = "torchvision"
) -> Tensor:
    """(N, S, S) mask probabilities and their (N, 4) boxes in the image's pixels ->
    (N, H, W) probabilities pasted into an image of ``image_size`` (h, w), by the
    ``convention`` of one of ``PASTES``."""
    if masks.dim() != 3:
        raise ValueError(f"paste_masks: masks must be (N, S, S), got {tuple(masks.shape)}")
    _check_boxes(boxes, masks.shape[0], "paste_masks")
    if convention not in PASTES:
        raise ValueError(f"paste_masks: unknown convention {convention!r}; valid: {', '.join(PASTES)}")
    return PASTES[convention](masks, boxes, image_size)


def _paste_resize(masks: Tensor, boxes: Tensor, image_size: tuple[int, int], padding: int = 1) -> Tensor:
    """torchvision's ``paste_masks_in_image``."""
    im_h, im_w = image_size
    size = masks.shape[-1]
    masks = F.pad(masks, (padding,) * 4)
    boxes = _expand_boxes(boxes, float(size + 2 * padding) / size).to(torch.int64)
    out = masks.new_zeros((masks.shape[0], im_h, im_w))
    for mask, dst, (x0, y0, x1, y1) in zip(masks, out, boxes.tolist()):
        # The box covers pixels x0..x1 and y0..y1 inclusive.
        w, h = max(x1 - x0 + 1, 1), max(y1 - y0 + 1, 1)
        mask = F.interpolate(mask[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        left, right = max(x0, 0), min(x1 + 1, im_w)
        top, bottom = max(y0, 0), min(y1 + 1, im_h)
        if right > left and bottom > top:
            dst[top:bottom, left:right] = mask[top - y0 : bottom - y0, left - x0 : right - x0]
    return out


def _paste_grid_sample(masks: Tensor, boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    """detectron2's / mmdetection's ``_do_paste_mask``: the pixel centre (x + 0.5, y + 0.5)
    samples the mask bilinearly at its normalised position in the box (zero outside it),
    one mask at a time over the pixels its box touches (their CPU path)."""
    im_h, im_w = image_size
    out = masks.new_zeros((masks.shape[0], im_h, im_w))
    for mask, dst, box in zip(masks, out, boxes):
        x0, y0, x1, y1 = box[:, None].unbind(0)
        left, top = (box[:2].floor() - 1).clamp(min=0).to(torch.int64).tolist()
        right = int((box[2].ceil() + 1).clamp(max=im_w))
        bottom = int((box[3].ceil() + 1).clamp(max=im_h))
        ys = (torch.arange(top, bottom, device=masks.device, dtype=torch.float32) + 0.5 - y0) / (y1 - y0) * 2 - 1
        xs = (torch.arange(left, right, device=masks.device, dtype=torch.float32) + 0.5 - x0) / (x1 - x0) * 2 - 1
        xs, ys = xs.nan_to_num(posinf=0.0, neginf=0.0), ys.nan_to_num(posinf=0.0, neginf=0.0)
        grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij")[::-1], dim=-1)
        dst[top:bottom, left:right] = F.grid_sample(mask[None, None].float(), grid[None], align_corners=False)[0, 0]
    return out


PASTES = {"torchvision": _paste_resize, "grid_sample": _paste_grid_sample}
