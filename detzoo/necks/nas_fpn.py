"""NAS-FPN (Ghiasi et al. 2019): the searched pyramid of merge cells, as mmdetection 3.3's
``NASFPN`` (RetinaNet NAS-FPN configs), same layout as ``FPN``."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from detzoo.layers.conv import conv_norm

LEVELS = (3, 4, 5, 6, 7)  # the cells are wired on p3..p7


def resize_to(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize ``x`` to ``size`` = (h, w) by mmcv's merge-cell rule (``BaseMergeCell._resize``).

    Where ``x``'s (h, w) compares lexicographically (as Python tuples) below ``size`` it is
    nearest-interpolated to ``size``; above, it is zero-padded (split evenly, the odd pixel at
    the bottom / right) up to a multiple of ``size`` and max-pooled with kernel = stride = the
    per-dimension ratio. Zero padding, not -inf: padded windows clamp negatives to 0.
    """
    h, w = x.shape[-2:]
    th, tw = size
    if (h, w) == (th, tw):
        return x
    if (h, w) < (th, tw):
        return F.interpolate(x, size=(th, tw), mode="nearest")
    pad_h, pad_w = -h % th, -w % tw
    if pad_h or pad_w:
        x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
    # int(): a pooling kernel is a constant of an ONNX graph; the ratio is the same for
    # every input padded to a multiple of 128 (a traced size would be a tensor)
    kernel = (int((h + pad_h) // th), int((w + pad_w) // tw))
    return F.max_pool2d(x, kernel_size=kernel, stride=kernel)


class MergeCell(nn.Module):
    """A binary NAS-FPN cell (mmcv's ``BaseMergeCell``): both inputs ``resize_to`` the output
    size, combined by the subclass's ``merge``, then, with ``with_conv``, ReLU -> 3x3 conv
    (with bias) -> norm (mmcv's ``out_conv_order=('act', 'conv', 'norm')``); ``out_conv`` is
    a ``conv_norm``."""

    def __init__(self, channels: int, *, norm: str | None, with_conv: bool = True) -> None:
        super().__init__()
        self.out_conv = (
            conv_norm(channels, channels, 3, norm=norm, bias=True) if with_conv else None
        )

    def merge(self, x1: Tensor, x2: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x1: Tensor, x2: Tensor, size: tuple[int, int]) -> Tensor:
        x = self.merge(resize_to(x1, size), resize_to(x2, size))
        return x if self.out_conv is None else self.out_conv(F.relu(x))


class SumCell(MergeCell):
    """Sum cell: ``x1 + x2``."""

    def merge(self, x1: Tensor, x2: Tensor) -> Tensor:
        return x1 + x2


class GlobalPoolingCell(MergeCell):
    """Global-pooling cell: ``x2 + sigmoid(global_avg_pool(x2)) * x1`` (x2 gates x1)."""

    def merge(self, x1: Tensor, x2: Tensor) -> Tensor:
        return x2 + F.adaptive_avg_pool2d(x2, 1).sigmoid() * x1


class NASFPNStage(nn.Module):
    """One repeat of the searched architecture, (p3..p7) -> (p3..p7).

    Cells are named ``{op}_{in1}{in2}_{out}`` after the paper's connections (mmdetection's
    names): ``gp_64_4`` merges p6 and p4 into a p4-sized map by global pooling, and so on.
    """

    def __init__(self, channels: int, *, norm: str | None) -> None:
        super().__init__()
        self.gp_64_4 = GlobalPoolingCell(channels, norm=norm)
        self.sum_44_4 = SumCell(channels, norm=norm)
        self.sum_43_3 = SumCell(channels, norm=norm)
        self.sum_34_4 = SumCell(channels, norm=norm)
        self.gp_43_5 = GlobalPoolingCell(channels, norm=norm, with_conv=False)
        self.sum_55_5 = SumCell(channels, norm=norm)
        self.gp_54_7 = GlobalPoolingCell(channels, norm=norm, with_conv=False)
        self.sum_77_7 = SumCell(channels, norm=norm)
        self.gp_75_6 = GlobalPoolingCell(channels, norm=norm)

    def forward(
        self, p3: Tensor, p4: Tensor, p5: Tensor, p6: Tensor, p7: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        s3, s4, s5, s6, s7 = (tuple(p.shape[-2:]) for p in (p3, p4, p5, p6, p7))
        p4_1 = self.gp_64_4(p6, p4, s4)
        p4_2 = self.sum_44_4(p4_1, p4, s4)
        p3 = self.sum_43_3(p4_2, p3, s3)
        p4 = self.sum_34_4(p3, p4_2, s4)
        p5 = self.sum_55_5(p5, self.gp_43_5(p4, p3, s5), s5)
        p7 = self.sum_77_7(p7, self.gp_54_7(p5, p4_2, s7), s7)
        p6 = self.gp_75_6(p7, p5, s6)
        return p3, p4, p5, p6, p7


class NASFPN(nn.Module):
    """NAS-FPN over the backbone maps ``c3..`` giving ``p3..p7``.

    Each input gets a 1x1 lateral ``conv_norm``; the missing levels up to p7 each come from
    the level below by a 1x1 ``conv_norm`` then a 2x2 stride-2 max-pool; then ``num_stages``
    ``NASFPNStage`` repeats. Convs get ``conv_norm``'s init (kaiming-uniform, a=1, zero
    bias), which is mmdetection's ``Caffe2Xavier`` init for this neck; norms the defaults.

    ``in_channels`` / ``in_strides`` come from the backbone's ``out_channels`` /
    ``strides``; ``out_channels`` and ``strides`` describe what this module produces.
    Inputs should be padded to a multiple of 128 (mmdetection's ``pad_size_divisor``) so the
    levels halve exactly; other sizes run, with the resize rules of ``resize_to``.
    """

    def __init__(
        self,
        *,
        in_channels: Mapping[str, int],
        in_strides: Mapping[str, int],
        in_features: Sequence[str] = ("c3", "c4", "c5"),
        out_channels: int = 256,
        num_stages: int = 7,
        norm: str | None = "BN",
    ) -> None:
        super().__init__()
        levels = [int(name[1:]) for name in in_features]
        if not levels or levels != list(LEVELS[: len(levels)]):
            raise ValueError(
                f"NASFPN: in_features must be consecutive levels from c3, got {list(in_features)}"
            )
        self.in_features = list(in_features)
        self.lateral_convs = nn.ModuleList(
            conv_norm(in_channels[name], out_channels, 1, norm=norm) for name in self.in_features
        )
        self.extra_convs = nn.ModuleList(
            conv_norm(out_channels, out_channels, 1, norm=norm) for _ in LEVELS[len(levels) :]
        )
        self.stages = nn.ModuleList(NASFPNStage(out_channels, norm=norm) for _ in range(num_stages))
        self.strides = {f"p{level}": in_strides[f"c{level}"] for level in levels}
        for level in LEVELS[len(levels) :]:
            self.strides[f"p{level}"] = self.strides[f"p{level - 1}"] * 2
        self.out_channels = {name: out_channels for name in self.strides}

    def forward(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        feats = [conv(features[name]) for conv, name in zip(self.lateral_convs, self.in_features)]
        for conv in self.extra_convs:
            feats.append(F.max_pool2d(conv(feats[-1]), kernel_size=2, stride=2))
        for stage in self.stages:
            feats = stage(*feats)
        return dict(zip(self.strides, feats))
