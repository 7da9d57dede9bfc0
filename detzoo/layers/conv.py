"""Conv + norm blocks shared by necks and heads."""

from __future__ import annotations

from torch import nn

from detzoo.layers.norm import build_norm, conv_class


def conv_norm(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    norm: str | None,
    conv_ws: bool = False,
    bias: bool | None = None,
    stride: int = 1,
) -> nn.Sequential:
    """conv followed by the norm, as an ``nn.Sequential`` so the conv is always ``[0]`` and
    the norm ``[1]``. ``bias=None`` gives the conv a bias only without norm; ``True`` /
    ``False`` force it (mmcv's NAS-FPN cells put a biased conv before BN). Padding is
    ``kernel_size // 2`` at any ``stride``."""
    conv = conv_class(conv_ws)(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=kernel_size // 2,
        bias=norm is None if bias is None else bias,
    )
    nn.init.kaiming_uniform_(conv.weight, a=1)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    layers = [conv] if norm is None else [conv, build_norm(norm, out_channels)]
    return nn.Sequential(*layers)


def conv_stack(
    in_channels: int,
    conv_dim: int,
    num_convs: int,
    *,
    norm: str | None = None,
    conv_ws: bool = False,
    bias: bool | None = None,
) -> nn.ModuleList:
    """``num_convs`` 3x3 ``conv_norm`` blocks, the first from ``in_channels``, the rest
    ``conv_dim`` to ``conv_dim`` (the conv towers of the box, mask, keypoint and RetinaNet
    heads)."""
    return nn.ModuleList(
        conv_norm(in_channels if i == 0 else conv_dim, conv_dim, 3, norm=norm, conv_ws=conv_ws, bias=bias)
        for i in range(num_convs)
    )
