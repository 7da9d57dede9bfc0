"""Feature Pyramid Network (Lin et al. 2017) and the extra levels put on top of it."""

from __future__ import annotations

from typing import Mapping

import torch.nn.functional as F
from torch import Tensor, nn

from detzoo.layers.conv import conv_norm


class LastLevelMaxPool(nn.Module):
    """One extra level: a stride-2 max-pool (kernel 1) of the top output (P6 of the
    two-stage FPN models)."""

    num_levels = 1

    def forward(self, outputs: Mapping[str, Tensor], features: Mapping[str, Tensor]) -> list[Tensor]:
        """``outputs``: the pyramid so far, bottom to top; ``features``: the backbone's."""
        return [F.max_pool2d(list(outputs.values())[-1], kernel_size=1, stride=2)]


class LastLevelP6P7(nn.Module):
    """Two extra levels (RetinaNet): P6 = 3x3 stride-2 conv of ``in_feature`` (the
    backbone's ``c5`` as detectron2 and mmdetection, or the top output ``p5`` as
    torchvision), P7 = 3x3 stride-2 conv of P6, after a ReLU when ``relu_before_p7``
    (torchvision, detectron2; mmdetection's RetinaNet configs have none). With ``norm``
    each conv is followed by that norm (mmdetection's FPN with a norm, crop640 recipe)."""

    num_levels = 2

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        in_feature: str,
        relu_before_p7: bool = True,
        norm: str | None = None,
    ) -> None:
        super().__init__()
        self.in_feature = in_feature
        self.relu_before_p7 = relu_before_p7
        self.p6 = conv_norm(in_channels, out_channels, 3, norm=norm, stride=2)
        self.p7 = conv_norm(out_channels, out_channels, 3, norm=norm, stride=2)

    def forward(self, outputs: Mapping[str, Tensor], features: Mapping[str, Tensor]) -> list[Tensor]:
        p6 = self.p6(features[self.in_feature] if self.in_feature in features else outputs[self.in_feature])
        return [p6, self.p7(F.relu(p6) if self.relu_before_p7 else p6)]


class FPN(nn.Module):
    """Top-down pyramid over backbone maps (``in_features``, consecutive, e.g. c2-c5):
    1x1 lateral convs (with ``norm`` when ``lateral_norm``), nearest x2 upsampling and sum,
    3x3 output convs (with ``norm``), giving ``p2..p5``,
    then the levels of ``top_block`` (``LastLevelMaxPool``: p6; ``LastLevelP6P7``: p6, p7),
    each at twice the stride of the one below.

    ``in_channels`` / ``in_strides`` come from the backbone's ``out_channels`` /
    ``strides``; ``out_channels`` and ``strides`` describe what this module produces.
    """

    def __init__(
        self,
        *,
        in_channels: Mapping[str, int],
        in_strides: Mapping[str, int],
        in_features: tuple[str, ...] = ("c2", "c3", "c4", "c5"),
        out_channels: int = 256,
        norm: str | None = None,
        lateral_norm: bool = True,
        conv_ws: bool = False,
        top_block: LastLevelMaxPool | LastLevelP6P7 | None = None,
    ) -> None:
        super().__init__()
        unknown = [f for f in in_features if f not in in_channels]
        if unknown:
            raise ValueError(f"FPN: in_features {unknown} are not produced by the backbone ({list(in_channels)})")
        self.in_features = list(in_features)
        self.lateral_convs = nn.ModuleList(
            conv_norm(in_channels[f], out_channels, 1, norm=norm if lateral_norm else None, conv_ws=conv_ws)
            for f in self.in_features
        )
        self.output_convs = nn.ModuleList(
            conv_norm(out_channels, out_channels, 3, norm=norm, conv_ws=conv_ws) for _ in self.in_features
        )
        self.top_block = top_block
        self.strides = {"p" + name[1:]: in_strides[name] for name in self.in_features}
        top = int(self.in_features[-1][1:])
        for i in range(1, 1 + (top_block.num_levels if top_block is not None else 0)):
            self.strides[f"p{top + i}"] = self.strides[f"p{top}"] * 2**i
        self.out_channels = {name: out_channels for name in self.strides}

    def forward(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        xs = [features[name] for name in self.in_features]
        inner = self.lateral_convs[-1](xs[-1])
        outs = [self.output_convs[-1](inner)]
        for i in range(len(xs) - 2, -1, -1):
            lateral = self.lateral_convs[i](xs[i])
            inner = lateral + F.interpolate(inner, size=lateral.shape[-2:], mode="nearest")
            outs.insert(0, self.output_convs[i](inner))
        levels = dict(zip(self.strides, outs))
        if self.top_block is not None:
            extra = self.top_block(levels, features)
            levels.update(zip(list(self.strides)[len(outs):], extra))
        return levels
