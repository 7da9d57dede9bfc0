"""Keypoint R-CNN heatmap targets, loss and decoding, with torchvision's arithmetic.

A keypoint's target is the one heatmap cell it falls in (Heckbert 1990: continuous
c = discrete d + 0.5); decoding upsamples each heatmap bicubically to the box's size
and takes the centre of the best pixel. Keypoint names and the left/right flip map
live in ``detzoo.data`` (``synthetic.PERSON_KEYPOINTS``, ``transforms.keypoint_flip_map``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def keypoint_targets(keypoints: Tensor, boxes: Tensor, *, heatmap_size: int) -> tuple[Tensor, Tensor]:
    """(N, K, 3) keypoints (x, y, visibility) matched to (N, 4) xyxy boxes -> the flat
    index ``y * heatmap_size + x`` of each keypoint's heatmap cell (N, K) int64 (0 where
    not valid) and whether it is visible and inside its box (N, K) bool."""
    if keypoints.dim() != 3 or keypoints.shape[2] != 3:
        raise ValueError(f"keypoint_targets: keypoints must be (N, K, 3), got {tuple(keypoints.shape)}")
    if boxes.shape != (keypoints.shape[0], 4):
        raise ValueError(f"keypoint_targets: boxes must be ({keypoints.shape[0]}, 4), got {tuple(boxes.shape)}")
    x1, y1, x2, y2 = (c[:, None] for c in boxes.unbind(1))
    x, y = keypoints[..., 0], keypoints[..., 1]
    cell_x = ((x - x1) * (heatmap_size / (x2 - x1))).floor().long()
    cell_y = ((y - y1) * (heatmap_size / (y2 - y1))).floor().long()
    # A keypoint on the right/bottom edge belongs to the last cell, not outside.
    cell_x = torch.where(x == x2, heatmap_size - 1, cell_x)
    cell_y = torch.where(y == y2, heatmap_size - 1, cell_y)
    inside = (cell_x >= 0) & (cell_y >= 0) & (cell_x < heatmap_size) & (cell_y < heatmap_size)
    valid = inside & (keypoints[..., 2] > 0)
    return torch.where(valid, cell_y * heatmap_size + cell_x, 0), valid


def keypoint_loss(logits: Tensor, targets: Tensor, valid: Tensor) -> Tensor:
    """Softmax cross-entropy over the M x M cells of (N, K, M, M) ``logits`` for each
    valid keypoint, averaged over the valid ones; zero (kept in the graph) if none."""
    if logits.dim() != 4 or logits.shape[2] != logits.shape[3]:
        raise ValueError(f"keypoint_loss: logits must be (N, K, M, M), got {tuple(logits.shape)}")
    if targets.shape != logits.shape[:2] or valid.shape != logits.shape[:2]:
        raise ValueError(
            f"keypoint_loss: targets {tuple(targets.shape)} and valid {tuple(valid.shape)} "
            f"must be {tuple(logits.shape[:2])}"
        )
    valid = valid.flatten().bool()
    if not valid.any():
        return logits.sum() * 0
    return F.cross_entropy(logits.flatten(0, 1).flatten(1)[valid], targets.flatten()[valid])


def heatmaps_to_keypoints(maps: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
    """(N, K, M, M) heatmap logits of (N, 4) xyxy boxes -> keypoints (N, K, 3) as
    (x, y, 1) in the boxes' pixels and their scores (N, K), the upsampled logit there."""
    if maps.dim() != 4:
        raise ValueError(f"heatmaps_to_keypoints: maps must be (N, K, M, M), got {tuple(maps.shape)}")
    if boxes.shape != (maps.shape[0], 4):
        raise ValueError(f"heatmaps_to_keypoints: boxes must be ({maps.shape[0]}, 4), got {tuple(boxes.shape)}")
    num_boxes, num_keypoints = maps.shape[:2]
    widths = (boxes[:, 2] - boxes[:, 0]).clamp(min=1)
    heights = (boxes[:, 3] - boxes[:, 1]).clamp(min=1)
    map_widths, map_heights = widths.ceil(), heights.ceil()
    cells = torch.zeros((num_boxes, num_keypoints, 2), dtype=torch.int64, device=maps.device)
    scores = torch.zeros((num_boxes, num_keypoints), dtype=maps.dtype, device=maps.device)
    for i, (h, w) in enumerate(zip(map_heights.long().tolist(), map_widths.long().tolist())):
        # One box at a time: each is resized to its own (ceil'd) size in pixels.
        roi_map = F.interpolate(maps[i][:, None], size=(h, w), mode="bicubic", align_corners=False)
        flat = roi_map.flatten(1)
        pos = flat.argmax(dim=1)
        cells[i, :, 0] = pos % w
        cells[i, :, 1] = pos // w
        scores[i] = flat.gather(1, pos[:, None])[:, 0]
    x = (cells[..., 0].float() + 0.5) * (widths / map_widths)[:, None] + boxes[:, 0, None]
    y = (cells[..., 1].float() + 0.5) * (heights / map_heights)[:, None] + boxes[:, 1, None]
    return torch.stack([x, y, torch.ones_like(x)], dim=2), scores
