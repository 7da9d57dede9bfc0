"""Plain data types that flow between the data pipeline, the models and the evaluators.

* ``Instances``: the objects of one image (boxes in xyxy pixels, contiguous labels
  ``0..K-1``, optional scores, masks and keypoints), indexable as a whole.
* ``ImageBatch``: normalised images padded into one NCHW tensor, with the size of each
  image before padding (``image_sizes``) and before resizing (``original_sizes``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

Size = tuple[int, int]  # (height, width)


@dataclass(frozen=True)
class ClassRows:
    """How a parameter of a head follows the classes it predicts, along dimension ``dim``:
    ``groups`` blocks (one per anchor; the group count is the size over the block's) of
    ``width`` rows per class, class ``c``'s at ``c * width`` within a block, then ``extra``
    rows that belong to no class (the background logit). ``follows="keypoints"``: the rows
    are the keypoints, one each. Fine-tuning (``detzoo.engine.initialize``) moves rows by
    class name with it."""

    width: int = 1
    extra: int = 0
    dim: int = 0
    follows: str = "classes"


@dataclass
class Instances:
    """Objects of one image. Every tensor field has the instance count as first dim.

    boxes: (N, 4) float xyxy in pixels of the image they belong to.
    labels: (N,) int64 contiguous class indices 0..K-1.
    scores: (N,) float, predictions only.
    masks: (N, H, W) bool/uint8 full-image masks, optional.
    keypoints: (N, K, 3) float x, y, visibility (targets) or score (predictions), optional.
    """

    boxes: Tensor
    labels: Tensor
    scores: Tensor | None = None
    masks: Tensor | None = None
    keypoints: Tensor | None = None

    def __post_init__(self) -> None:
        n = self.boxes.shape[0]
        if self.boxes.dim() != 2 or self.boxes.shape[1] != 4:
            raise ValueError(f"Instances.boxes must be (N, 4), got {tuple(self.boxes.shape)}")
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and value.shape[0] != n:
                raise ValueError(
                    f"Instances.{f.name} has {value.shape[0]} rows but boxes has {n}"
                )

    def __len__(self) -> int:
        return self.boxes.shape[0]

    def _map(self, fn) -> "Instances":
        return replace(
            self,
            **{f.name: fn(getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None},
        )

    def __getitem__(self, index) -> "Instances":
        return self._map(lambda t: t[index])

    def to(self, device: torch.device | str) -> "Instances":
        return self._map(lambda t: t.to(device))


@dataclass
class ImageBatch:
    tensor: Tensor  # (N, C, H, W), padded with zeros after normalisation
    image_sizes: list[Size]  # per image (h, w) after resizing, before padding
    original_sizes: list[Size]  # per image (h, w) as read from disk

    def __len__(self) -> int:
        return len(self.image_sizes)

    @classmethod
    def from_tensors(
        cls,
        images: Sequence[Tensor],
        original_sizes: Sequence[Size],
        size_divisibility: int = 32,
    ) -> "ImageBatch":
        """Pad (C, H, W) images at the bottom/right with zeros to a common size divisible
        by ``size_divisibility``. Integer arithmetic on the sizes and ``F.pad``, so that a
        traced image size stays in the graph (``torch.onnx.export`` of one image)."""
        if len(images) == 0:
            raise ValueError("ImageBatch.from_tensors needs at least one image")
        max_h = max(im.shape[-2] for im in images)
        max_w = max(im.shape[-1] for im in images)
        d = size_divisibility
        pad_h, pad_w = (max_h + d - 1) // d * d, (max_w + d - 1) // d * d
        tensor = torch.stack([F.pad(im, (0, pad_w - im.shape[-1], 0, pad_h - im.shape[-2])) for im in images])
        return cls(
            tensor=tensor,
            image_sizes=[tuple(im.shape[-2:]) for im in images],
            original_sizes=[tuple(s) for s in original_sizes],
        )


def size_ratio(from_size: Size, to_size: Size, device: torch.device | str = "cpu") -> Tensor:
    """(ratio_w, ratio_h) from an image of ``from_size`` to one of ``to_size`` (h, w), in
    float32 as torchvision computes them."""
    ratio_h = torch.tensor(to_size[0], dtype=torch.float32, device=device) / torch.tensor(
        from_size[0], dtype=torch.float32, device=device
    )
    ratio_w = torch.tensor(to_size[1], dtype=torch.float32, device=device) / torch.tensor(
        from_size[1], dtype=torch.float32, device=device
    )
    return torch.stack([ratio_w, ratio_h])


def scale_boxes(boxes: Tensor, from_size: Size, to_size: Size) -> Tensor:
    """Rescale xyxy boxes from an image of ``from_size`` to one of ``to_size`` (h, w)."""
    return boxes * size_ratio(from_size, to_size, boxes.device).repeat(2).to(boxes.dtype)


def scale_points(points: Tensor, from_size: Size, to_size: Size) -> Tensor:
    """Rescale (..., >=2) points whose first two columns are x, y; other columns kept."""
    xy = points[..., :2] * size_ratio(from_size, to_size, points.device).to(points.dtype)
    return torch.cat([xy, points[..., 2:]], dim=-1)


@dataclass(frozen=True)
class PixelFormat:
    """How a model wants its input pixels: channel order, then ``(x / scale - mean) / std``
    per channel (mean/std in that channel order).

    detectron2 / mmdetection caffe weights: BGR, scale 1, mean [103.53, 116.28, 123.675],
    std 1. torchvision weights: RGB, scale 255, ImageNet mean/std in 0-1 units (kept in
    those units so the arithmetic is torchvision's to the last bit).
    """

    channel_order: str
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"pixel channel order must be 'RGB' or 'BGR', got {self.channel_order!r}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"pixel mean and std need 3 values each, got {self.mean} and {self.std}")

    def normalize(self, image: Tensor) -> Tensor:
        """(3, H, W) RGB 0-255 float -> normalised in the model's channel order."""
        if self.channel_order == "BGR":
            image = image.flip(0)
        if self.scale != 1.0:
            image = image / self.scale
        mean = torch.as_tensor(self.mean, dtype=image.dtype, device=image.device)
        std = torch.as_tensor(self.std, dtype=image.dtype, device=image.device)
        return (image - mean[:, None, None]) / std[:, None, None]
