"""RoIAlign over one feature map or a pyramid, with each box pooled from one level."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn
from torchvision.ops import box_area, roi_align


class MultiLevelRoIAlign(nn.Module):
    """Pools ``output_size`` x ``output_size`` features for boxes from the level
    ``floor(canonical_level + log2(sqrt(area) / canonical_size))`` clamped to the levels
    given (FPN paper, eq. 1). With one level it is plain RoIAlign.

    ``aligned`` / ``sampling_ratio``: detectron2 and mmdetection use True / 0,
    torchvision False / 2.
    """

    def __init__(
        self,
        *,
        strides: Sequence[int],
        output_size: int,
        sampling_ratio: int = 0,
        aligned: bool = True,
        canonical_level: int = 4,
        canonical_size: int = 224,
    ) -> None:
        super().__init__()
        self.scales = [1.0 / s for s in strides]
        levels = [int(round(math.log2(s))) for s in strides]
        if levels != list(range(levels[0], levels[0] + len(levels))):
            raise ValueError(f"MultiLevelRoIAlign: strides {list(strides)} are not consecutive powers of 2")
        self.min_level, self.max_level = levels[0], levels[-1]
        self.output_size = output_size
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned
        self.canonical_level = canonical_level
        self.canonical_size = canonical_size

    def assign_levels(self, boxes: Tensor) -> Tensor:
        """Index (0-based into the given levels) of the level each box is pooled from."""
        size = torch.sqrt(box_area(boxes))
        level = torch.floor(
            self.canonical_level + torch.log2(size / self.canonical_size) + torch.tensor(1e-6, dtype=size.dtype)
        )
        return level.clamp(min=self.min_level, max=self.max_level).to(torch.int64) - self.min_level

    def forward(self, features: Sequence[Tensor], boxes: Sequence[Tensor]) -> Tensor:
        """``features``: one (N, C, H, W) map per level; ``boxes``: per image (M_i, 4) in
        image pixels. Returns (sum M_i, C, S, S) in the order of the concatenated boxes."""
        rois = torch.cat(
            [torch.cat([b.new_full((b.shape[0], 1), i), b], dim=1) for i, b in enumerate(boxes)], dim=0
        )
        kwargs = dict(output_size=self.output_size, sampling_ratio=self.sampling_ratio, aligned=self.aligned)
        if len(features) == 1:
            return roi_align(features[0], rois, spatial_scale=self.scales[0], **kwargs)
        levels = self.assign_levels(rois[:, 1:])
        out = rois.new_zeros((rois.shape[0], features[0].shape[1], self.output_size, self.output_size))
        out = out.to(features[0].dtype)
        for level, (feature, scale) in enumerate(zip(features, self.scales)):
            idx = torch.nonzero(levels == level).flatten()
            out[idx] = roi_align(feature, rois[idx], spatial_scale=scale, **kwargs).to(out.dtype)
        return out
