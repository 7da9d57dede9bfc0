"""Conv + norm blocks shared by necks and heads."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from detzoo.layers.norm import build_norm, conv_class, conv_norm_forward


def avx512_cpu(device: torch.device) -> bool:
    """Whether ``device`` is a CPU whose kernels use AVX-512 (torch's dispatch level): oneDNN's
    convolutions differ most between these and AVX2 ones, for the layout they are fastest in
    (``detzoo.detectors.model.memory_format``) and for a kernel the size of the map
    (``detzoo.heads.box.map_linear``)."""
    return device.type == "cpu" and torch.backends.cpu.get_cpu_capability().startswith("AVX512")


class ConvNorm(nn.Sequential):
    """A conv (``[0]``) and an optional norm (``[1]``), run by ``conv_norm_forward``: a
    frozen or eval-mode BN is folded into the conv."""

    def forward(self, x: Tensor) -> Tensor:
        return conv_norm_forward(self[0], self[1] if len(self) > 1 else None, x)


def conv_norm(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    norm: str | None,
    conv_ws: bool = False,
    bias: bool | None = None,
    stride: int = 1,
) -> ConvNorm:
    """conv followed by the norm, as an ``nn.Sequential`` so the conv is always ``[0]`` and
    the norm ``[1]`` (a ``ConvNorm``). ``bias=None`` gives the conv a bias only without norm; ``True`` /
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
    return ConvNorm(*layers)


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
