"""Normalisation layers: frozen BN, BN, SyncBN, GN, and weight-standardised convolution.

The SyncBN rule: the config says which layers synchronise. ``norm="SyncBN"`` builds a
``SyncBatchNorm``: plain BN in one process, batch statistics over all processes under
torch.distributed with world size > 1, on any device. ``norm="BN"`` stays per-process BN
under DDP (mmdetection without ``sync_bn``, detectron2's "BN"): nothing is converted
behind the config's back, and BN and SyncBN checkpoints load into each other.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d

__all__ = [
    "NORMS",
    "ConvWS2d",
    "FrozenBatchNorm2d",
    "SyncBatchNorm",
    "build_norm",
    "conv_class",
    "conv_norm_forward",
    "is_batch_norm",
    "is_norm",
]

NORMS = ("FrozenBN", "BN", "SyncBN", "GN")


class ConvWS2d(nn.Conv2d):
    """Conv2d with Weight Standardization (Qiao et al.), as mmcv's ``ConvWS``.

    Each output filter is standardised over in-channels x kernel before every forward:
    ``w' = (w - mean(w)) / (std(w) + eps)``, std unbiased. No extra parameters.
    """

    eps = 1e-5

    def standardized_weight(self) -> Tensor:
        """The weight the convolution actually uses."""
        flat = self.weight.flatten(1)
        mean = flat.mean(dim=1).view(-1, 1, 1, 1)
        std = flat.std(dim=1).view(-1, 1, 1, 1)
        return (self.weight - mean) / (std + self.eps)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.standardized_weight(), self.bias)


class SyncBatchNorm(nn.BatchNorm2d):
    """BN whose batch statistics cover every process, on the CPU (gloo) as on GPUs (nccl).

    In training under world size > 1 the per-channel sum, then the sum of squared
    deviations from the global mean, are summed over processes with a differentiable
    all-reduce (as detectron2's ``NaiveSyncBatchNorm``, weighted by each process's pixel
    count), so gradients reach every process's input: the result is BN over the
    concatenated batch (``tests/test_distributed.py``). In one process, or in eval mode,
    it is ``nn.BatchNorm2d``. Not ``nn.SyncBatchNorm``: torch's kernels and DDP refuse it on
    the CPU. The cost: two small all-reduces per layer in the forward and two in the
    backward, where torch's CUDA kernels need one each.
    """

    def forward(self, x: Tensor) -> Tensor:
        synced = self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if not synced:
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]
        shape = (1, -1) + (1,) * (x.dim() - 2)
        x32 = x.float()
        count = x32.new_full((1,), x32.numel() / x32.shape[1])
        sums = dist_fn.all_reduce(torch.cat([x32.sum(dims), count]))
        count = sums[-1]
        mean = sums[:-1] / count
        centred = x32 - mean.view(shape)
        var = dist_fn.all_reduce((centred * centred).sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                factor = self.momentum if self.momentum is not None else 1.0 / self.num_batches_tracked.item()
                self.running_mean.lerp_(mean, factor)
                self.running_var.lerp_(var * count / (count - 1), factor)
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(x.dtype)


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` computed on a contiguous (NCHW) input. torch's channels-last CPU
    kernel computes the group statistics with about 20x the rounding error (1.5e-5 against
    8e-7 from float64 on N(5, 3) data at 256 x 100 x 152), which random-weight parity
    tests against mmdetection's GN+WS models show as 5e-3 in the scores; so the
    channels-last maps of ``DetectionModel.features`` are made contiguous here."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.contiguous())


def _affine(norm: nn.Module) -> tuple[Tensor, Tensor] | None:
    """(scale, shift) per channel when ``norm`` is, right now, the affine map
    ``x * scale + shift``: a frozen BN, or a BN / SyncBN in eval mode with running
    statistics; None when it depends on its input (BN in training, GN)."""
    if isinstance(norm, FrozenBatchNorm2d):
        scale = norm.weight * (norm.running_var + norm.eps).rsqrt()
        return scale, norm.bias - norm.running_mean * scale
    if is_batch_norm(norm) and not norm.training and norm.track_running_stats:
        scale = (norm.running_var + norm.eps).rsqrt()
        if norm.affine:
            scale = norm.weight * scale
        shift = -norm.running_mean * scale
        return scale, shift if not norm.affine else norm.bias + shift
    return None


def conv_norm_forward(conv: nn.Conv2d, norm: nn.Module | None, x: Tensor) -> Tensor:
    """``norm(conv(x))`` in one pass over the output: a norm that is an affine map (frozen
    BN, BN in eval mode) is folded into the convolution's weight and bias, so the
    activations are not read and written again by the norm, in inference and in training
    (gradients reach the conv weight, and a BN's weight and bias, through the fold).
    Equal to the unfolded result up to float rounding."""
    affine = None if norm is None else _affine(norm)
    if affine is None:
        out = conv(x)
        return out if norm is None else norm(out)
    scale, shift = affine
    weight = conv.standardized_weight() if isinstance(conv, ConvWS2d) else conv.weight
    bias = shift if conv.bias is None else conv.bias * scale + shift
    return conv._conv_forward(x, weight * scale.reshape(-1, 1, 1, 1), bias)


def conv_class(ws: bool) -> type[nn.Conv2d]:
    """``ConvWS2d`` when ``ws`` (GN+WS models), else ``nn.Conv2d``."""
    return ConvWS2d if ws else nn.Conv2d


def build_norm(norm: str, num_channels: int, *, num_groups: int = 32) -> nn.Module:
    """A 2d norm layer by name: one of ``NORMS``; ``num_groups`` is used by GN only.

    SyncBN is ``SyncBatchNorm`` (see the module's SyncBN rule): statistics synchronised
    across processes under torch.distributed, plain BN in a single process (CPU included).
    """
    if norm == "FrozenBN":
        return FrozenBatchNorm2d(num_channels)
    if norm == "BN":
        return nn.BatchNorm2d(num_channels)
    if norm == "SyncBN":
        return SyncBatchNorm(num_channels)
    if norm == "GN":
        if num_channels % num_groups:
            raise ValueError(
                f"GN: num_channels={num_channels} is not divisible by num_groups={num_groups}"
            )
        return GroupNorm(num_groups, num_channels)
    raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")


def is_batch_norm(module: nn.Module) -> bool:
    """True for BN layers that track batch statistics (BN, SyncBN); False for FrozenBN and GN."""
    return isinstance(module, torch.nn.modules.batchnorm._BatchNorm)


def is_norm(module: nn.Module) -> bool:
    """True for every trainable norm layer (BN, SyncBN, GN), whose parameters the crop640
    recipe keeps out of weight decay."""
    return isinstance(module, (torch.nn.modules.batchnorm._BatchNorm, nn.GroupNorm))
