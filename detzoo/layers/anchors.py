"""Anchor boxes over a pyramid of feature maps."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn


class AnchorGenerator(nn.Module):
    """Anchors of every size x aspect ratio at every location of each level.

    Per level, anchors are ordered (y, x, cell anchor) and the cell anchors ratio-major:
    for ratio r (height / width) and size s, w = s / sqrt(r), h = s * sqrt(r), centred on
    the location's top-left corner plus ``offset * stride``.

    Two conventions differ between toolboxes and are arguments here:
    ``round_base``: torchvision rounds the cell anchors to integers, detectron2 and
    mmdetection do not. ``strides_from_grid``: torchvision derives each level's stride as
    padded image size // feature size (so P6 of an 800-pixel-high batch has stride 61),
    detectron2 and mmdetection use the nominal strides.
    """

    def __init__(
        self,
        *,
        sizes: Sequence[Sequence[float]],
        aspect_ratios: Sequence[float],
        strides: Sequence[int],
        round_base: bool = False,
        strides_from_grid: bool = False,
        offset: float = 0.0,
    ) -> None:
        super().__init__()
        if len(sizes) != len(strides):
            raise ValueError(
                f"AnchorGenerator: {len(sizes)} anchor size groups for {len(strides)} feature levels"
            )
        self.strides = [int(s) for s in strides]
        self.strides_from_grid = strides_from_grid
        self.offset = offset
        self.cell_anchors = [
            self._cell_anchors(level_sizes, aspect_ratios, round_base) for level_sizes in sizes
        ]

    @property
    def num_anchors(self) -> int:
        """Anchors per location (the same on every level)."""
        return self.cell_anchors[0].shape[0]

    @staticmethod
    def _cell_anchors(sizes: Sequence[float], ratios: Sequence[float], round_base: bool) -> Tensor:
        scales = torch.as_tensor(sizes, dtype=torch.float32)
        h_ratios = torch.sqrt(torch.as_tensor(ratios, dtype=torch.float32))
        w_ratios = 1 / h_ratios
        ws = (w_ratios[:, None] * scales[None, :]).view(-1)
        hs = (h_ratios[:, None] * scales[None, :]).view(-1)
        anchors = torch.stack([-ws, -hs, ws, hs], dim=1) / 2
        return anchors.round() if round_base else anchors

    def forward(
        self, batch_size: tuple[int, int], feature_sizes: Sequence[tuple[int, int]], device: torch.device
    ) -> list[Tensor]:
        """Anchors (H*W*A, 4) per level for a padded batch of ``batch_size`` (h, w)."""
        if len(feature_sizes) != len(self.cell_anchors):
            raise ValueError(
                f"AnchorGenerator built for {len(self.cell_anchors)} levels got {len(feature_sizes)} feature maps"
            )
        out = []
        for cell, stride, (fh, fw) in zip(self.cell_anchors, self.strides, feature_sizes):
            if self.strides_from_grid:
                stride_h, stride_w = batch_size[0] // fh, batch_size[1] // fw
            else:
                stride_h = stride_w = stride
            shifts_x = (torch.arange(fw, dtype=torch.float32, device=device) + self.offset) * stride_w
            shifts_y = (torch.arange(fh, dtype=torch.float32, device=device) + self.offset) * stride_h
            sy, sx = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
            sx, sy = sx.reshape(-1), sy.reshape(-1)
            shifts = torch.stack((sx, sy, sx, sy), dim=1)
            out.append((shifts[:, None, :] + cell.to(device)[None, :, :]).reshape(-1, 4))
        return out

