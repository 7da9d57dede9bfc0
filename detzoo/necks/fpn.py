"""Feature Pyramid Network (Lin et al. 2017)."""

from __future__ import annotations

from typing import Mapping

import torch.nn.functional as F
from torch import Tensor, nn

from detzoo.layers.conv import conv_norm


class FPN(nn.Module):
    """Top-down pyramid over the backbone maps ``c2..c5`` (any consecutive subset):
    1x1 lateral convs, nearest x2 upsampling and sum, 3x3 output convs, giving ``p2..p5``,
    plus ``p6`` as a stride-2 max-pool (kernel 1) of the top output for two-stage models.

    ``in_channels`` / ``in_strides`` come from the backbone's ``out_channels`` /
    ``strides``; ``out_channels`` and ``strides`` describe what this module produces.
    """

    def __init__(
        self,
        *,
        in_channels: Mapping[str, int],
        in_strides: Mapping[str, int],
        out_channels: int = 256,
        norm: str | None = None,
        conv_ws: bool = False,
        top_block: str | None = "maxpool",
    ) -> None:
        super().__init__()
        if top_block not in (None, "maxpool"):
            raise ValueError(f"FPN: unknown top_block {top_block!r}; valid: None, 'maxpool'")
        self.in_features = list(in_channels)
        self.lateral_convs = nn.ModuleList(
            conv_norm(c, out_channels, 1, norm=norm, conv_ws=conv_ws) for c in in_channels.values()
        )
        self.output_convs = nn.ModuleList(
            conv_norm(out_channels, out_channels, 3, norm=norm, conv_ws=conv_ws) for _ in in_channels
        )
        self.top_block = top_block
        self.strides = {"p" + name[1:]: in_strides[name] for name in self.in_features}
        if top_block == "maxpool":
            top = int(self.in_features[-1][1:])
            self.strides[f"p{top + 1}"] = self.strides[f"p{top}"] * 2
        self.out_channels = {name: out_channels for name in self.strides}

    def forward(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        xs = [features[name] for name in self.in_features]
        inner = self.lateral_convs[-1](xs[-1])
        outs = [self.output_convs[-1](inner)]
        for i in range(len(xs) - 2, -1, -1):
            lateral = self.lateral_convs[i](xs[i])
            inner = lateral + F.interpolate(inner, size=lateral.shape[-2:], mode="nearest")
            outs.insert(0, self.output_convs[i](inner))
        if self.top_block == "maxpool":
            outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
        return dict(zip(self.strides, outs))
