"""Normalisation layers: frozen BN, BN, SyncBN, GN, and weight-standardised convolution."""

import torch
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d

__all__ = ["NORMS", "ConvWS2d", "FrozenBatchNorm2d", "build_norm", "conv_class", "is_batch_norm", "is_norm"]

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


def conv_class(ws: bool) -> type[nn.Conv2d]:
    """``ConvWS2d`` when ``ws`` (GN+WS models), else ``nn.Conv2d``."""
    return ConvWS2d if ws else nn.Conv2d


def build_norm(norm: str, num_channels: int, *, num_groups: int = 32) -> nn.Module:
    """A 2d norm layer by name: one of ``NORMS``; ``num_groups`` is used by GN only.

    SyncBN is ``nn.SyncBatchNorm``: statistics synchronised across processes under
    torch.distributed, plain BN in a single process (CPU included).
    """
    if norm == "FrozenBN":
        return FrozenBatchNorm2d(num_channels)
    if norm == "BN":
        return nn.BatchNorm2d(num_channels)
    if norm == "SyncBN":
        return nn.SyncBatchNorm(num_channels)
    if norm == "GN":
        if num_channels % num_groups:
            raise ValueError(
                f"GN: num_channels={num_channels} is not divisible by num_groups={num_groups}"
            )
        return nn.GroupNorm(num_groups, num_channels)
    raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")


def is_batch_norm(module: nn.Module) -> bool:
    """True for BN layers that track batch statistics (BN, SyncBN); False for FrozenBN and GN."""
    return isinstance(module, torch.nn.modules.batchnorm._BatchNorm)


def is_norm(module: nn.Module) -> bool:
    """True for every trainable norm layer (BN, SyncBN, GN), whose parameters the crop640
    recipe keeps out of weight decay."""
    return isinstance(module, (torch.nn.modules.batchnorm._BatchNorm, nn.GroupNorm))
