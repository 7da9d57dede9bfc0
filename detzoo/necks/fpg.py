"""Feature Pyramid Grids (Chen et al. 2020) as mmdetection 3.3's ``FPG`` in the layout of its
FPG configs (bottom-up stages only), with the interface of ``FPN``."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from detzoo.layers.conv import conv_norm

EXTRA_DOWNSAMPLES = ("maxpool", "conv")


class GridNode(nn.Module):
    """One node of the grid, level i of a bottom-up stage: the sum of its incoming edges,
    each pre-activated (ReLU -> ``conv_norm``, mmcv's ``order=('act', 'conv', 'norm')``):

    - ``same_up``: level i-1 of this stage, 3x3 stride-2 conv (none at the bottom level);
    - ``across_lateral``: level i of the previous stage, 1x1 conv;
    - ``across_down``: level i+1 of the previous stage, nearest-upsampled to level i's size,
      then 3x3 conv (none at the top level);
    - ``across_skip``: level i of the grid's input, 1x1 conv.

    Summed in that order, as mmdetection does.
    """

    def __init__(self, channels: int, *, norm: str | None, bottom: bool, top: bool) -> None:
        super().__init__()
        self.same_up = None if bottom else conv_norm(channels, channels, 3, norm=norm, stride=2)
        self.across_lateral = conv_norm(channels, channels, 1, norm=norm)
        self.across_down = None if top else conv_norm(channels, channels, 3, norm=norm)
        self.across_skip = conv_norm(channels, channels, 1, norm=norm)

    def forward(
        self, below: Tensor | None, previous: Tensor, above: Tensor | None, grid_input: Tensor
    ) -> Tensor:
        """``below``: level i-1 of this stage; ``previous`` / ``above``: levels i / i+1 of the
        previous stage; ``grid_input``: level i of the grid's input."""
        edges = []
        if self.same_up is not None:
            edges.append(self.same_up(F.relu(below)))
        edges.append(self.across_lateral(F.relu(previous)))
        if self.across_down is not None:
            upsampled = F.interpolate(above, size=previous.shape[-2:], mode="nearest")
            edges.append(self.across_down(F.relu(upsampled)))
        edges.append(self.across_skip(F.relu(grid_input)))
        return sum(edges[1:], edges[0])


class FPG(nn.Module):
    """Feature Pyramid Grids over the backbone maps ``in_features`` (consecutive levels):
    c2-c5 giving p2-p6 (two-stage models), or c3-c5 giving p3-p7 (RetinaNet).

    The grid's input (stage 0) is a 1x1 lateral conv (with bias, no norm) per backbone map,
    then ``num_extra_levels`` levels, each made from the one below by ``extra_downsample``:
    ``"maxpool"`` (kernel 1, stride 2) or ``"conv"`` (3x3 stride-2 conv with bias, no norm nor
    activation); so the extra levels come from the top lateral, not from an output as in FPN.
    Then ``num_stages`` bottom-up stages of ``GridNode``\\ s. With L levels the grid starts
    triangular: level i joins at stage L-1-i and carries its input through the stages before
    (mmdetection's ``skip_inds``); ``stages[s]`` holds stage s's nodes keyed by level index
    ("0" = bottom). Each output is ReLU -> 3x3 conv (with bias, no norm) of the last stage.

    Convs get ``conv_norm``'s init (kaiming-uniform, a=1, zero bias), which is mmdetection's
    ``Caffe2Xavier`` init for this neck; norms weight 1, bias 0.

    mmdetection upsamples across-down edges by x2 and needs the levels to halve exactly
    (inputs padded to a multiple of the top stride: its ``pad_size_divisor`` 64 for p2-p6,
    128 for p3-p7); upsampling to the level's size is the same there, and elsewhere is the
    x2 upsampling cropped to the level (where mmdetection fails on the sum).

    ``in_channels`` / ``in_strides`` come from the backbone's ``out_channels`` /
    ``strides``; ``out_channels`` and ``strides`` describe what this module produces.
    """

    def __init__(
        self,
        *,
        in_channels: Mapping[str, int],
        in_strides: Mapping[str, int],
        in_features: Sequence[str] = ("c2", "c3", "c4", "c5"),
        out_channels: int = 256,
        num_stages: int = 9,
        num_extra_levels: int = 1,
        extra_downsample: str = "maxpool",
        norm: str | None = "BN",
    ) -> None:
        super().__init__()
        unknown = [f for f in in_features if f not in in_channels]
        if unknown:
            raise ValueError(
                f"FPG: in_features {unknown} are not produced by the backbone ({list(in_channels)})"
            )
        if extra_downsample not in EXTRA_DOWNSAMPLES:
            raise ValueError(
                f"FPG: unknown extra_downsample {extra_downsample!r}; valid: {EXTRA_DOWNSAMPLES}"
            )
        self.in_features = list(in_features)
        self.strides = {"p" + name[1:]: in_strides[name] for name in self.in_features}
        top = int(self.in_features[-1][1:])
        for i in range(1, num_extra_levels + 1):
            self.strides[f"p{top + i}"] = self.strides[f"p{top}"] * 2**i
        strides = list(self.strides.values())
        if any(upper != 2 * lower for lower, upper in zip(strides, strides[1:])):
            raise ValueError(
                f"FPG: in_features {self.in_features} must each be at twice the stride of the one below"
            )
        num_levels = len(strides)
        if num_stages < num_levels - 1:
            raise ValueError(
                f"FPG: {num_levels} levels need num_stages >= {num_levels - 1}, got {num_stages}"
            )
        self.out_channels = {name: out_channels for name in self.strides}

        self.lateral_convs = nn.ModuleList(
            conv_norm(in_channels[name], out_channels, 1, norm=None) for name in self.in_features
        )
        self.extra_downsamples = nn.ModuleList(
            nn.MaxPool2d(1, stride=2)
            if extra_downsample == "maxpool"
            else conv_norm(out_channels, out_channels, 3, norm=None, stride=2)
            for _ in range(num_extra_levels)
        )
        self.stages = nn.ModuleList(
            nn.ModuleDict(
                {
                    str(i): GridNode(out_channels, norm=norm, bottom=i == 0, top=i == num_levels - 1)
                    for i in range(num_levels)
                    if s >= num_levels - 1 - i
                }
            )
            for s in range(num_stages)
        )
        self.output_convs = nn.ModuleList(
            conv_norm(out_channels, out_channels, 3, norm=None) for _ in range(num_levels)
        )

    def forward(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        grid_input = [conv(features[name]) for conv, name in zip(self.lateral_convs, self.in_features)]
        for downsample in self.extra_downsamples:
            grid_input.append(downsample(grid_input[-1]))
        previous = grid_input
        for stage in self.stages:
            current: list[Tensor] = []
            for i, x in enumerate(previous):
                if str(i) not in stage:
                    current.append(x)
                    continue
                below = current[-1] if current else None
                above = previous[i + 1] if i + 1 < len(previous) else None
                current.append(stage[str(i)](below, x, above, grid_input[i]))
            previous = current
        return {
            name: conv(F.relu(x)) for name, conv, x in zip(self.strides, self.output_convs, previous)
        }
