"""Transforms on ``(image, *instances)``, as small steps and a ``Compose`` of them.

Images are (3, H, W) float tensors (RGB 0-255 as read, or normalised); ``instances`` are
the ground truth and, for Fast R-CNN, the precomputed proposals, transformed alike: boxes,
masks and keypoints follow the image. Every step is a frozen dataclass called as
``step(image, *instances, generator=None) -> (image, *instances)``. Random draws come
from ``generator`` (the global torch RNG when None, so ``torch.manual_seed`` reproduces
them), and only where there is a real choice, so a deterministic step leaves the RNG as
it was.

Two resize conventions (``Resize.convention``, the config's ``data.resize``):

* ``"torchvision"``: normalise first, then bilinear ``F.interpolate`` of the float image
  with the scale-factor arithmetic of torchvision's ``GeneralizedRCNNTransform``, so a
  converted torchvision model sees its input to the last bit;
* ``"mmdet"``: mmdetection's pixel pipeline: OpenCV bilinear resize of the uint8 image to
  mmcv's ``rescale_size``, then normalise.

``build_transforms`` makes the training / test pipeline of a data config.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from detzoo.config import ConfigError
from detzoo.structures import Instances, PixelFormat, Size, scale_boxes, scale_points

Transform = Callable[..., tuple[Tensor, ...]]  # (image, *instances, generator=None)
RESIZE_CONVENTIONS = ("torchvision", "mmdet")


def resize_image(image: Tensor, *, short: int, max_size: int) -> Tensor:
    """Scale so the shorter side is ``short`` unless the longer would exceed ``max_size``,
    with the arithmetic of torchvision's ``GeneralizedRCNNTransform.resize`` (bilinear)."""
    h, w = image.shape[-2:]
    scale = min(short / min(h, w), max_size / max(h, w))
    if min(h, w) * scale < 1:  # a side under one pixel (a 10000 x 10 image), where torchvision fails: one pixel
        return F.interpolate(image[None], size=(max(1, int(h * scale)), max(1, int(w * scale))), mode="bilinear",
                             align_corners=False)[0]
    return F.interpolate(
        image[None], scale_factor=scale, mode="bilinear", recompute_scale_factor=True, align_corners=False
    )[0]


def mmdet_resize_image(image: Tensor, *, short: int, max_size: int) -> Tensor:
    """``mmcv.imrescale(img, (max_size, short))`` of mmdetection's keep-ratio ``Resize``:
    scale = min(long edge limit / long side, short edge limit / short side), new size
    ``int(side * scale + 0.5)``, ``cv2.resize`` with ``INTER_LINEAR`` on the uint8 image.
    ``image`` must hold 0-255 integers (as read, before ``Normalize``)."""
    import cv2

    pixels = image.to(torch.uint8)
    if not torch.equal(pixels.to(image.dtype), image):
        raise ValueError("Resize(convention='mmdet') needs 0-255 integer pixels: resize before Normalize")
    h, w = image.shape[-2:]
    scale = min(max(short, max_size) / max(h, w), min(short, max_size) / min(h, w))
    size = max(1, int(w * scale + 0.5)), max(1, int(h * scale + 0.5))  # (w, h), as cv2 takes it; 1 pixel at least
    resized = cv2.resize(pixels.permute(1, 2, 0).contiguous().numpy(), size, interpolation=cv2.INTER_LINEAR)
    return torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1), dtype=np.float32))


def resize_instances(instances: Instances, from_size: Size, to_size: Size) -> Instances:
    """Boxes and keypoints scaled by the per-axis float32 size ratios, masks nearest."""
    masks = instances.masks
    if masks is not None:
        masks = F.interpolate(masks[:, None].float(), size=tuple(to_size))[:, 0].to(masks.dtype)
    keypoints = instances.keypoints
    if keypoints is not None:
        keypoints = scale_points(keypoints, from_size, to_size)
    boxes = scale_boxes(instances.boxes, from_size, to_size)
    return replace(instances, boxes=boxes, masks=masks, keypoints=keypoints)


def crop_instances(instances: Instances, *, top: int, left: int, size: Size) -> Instances:
    """The objects of the window of ``size`` (h, w) at (``top``, ``left``), in its pixels:
    boxes shifted and clipped to it, masks cut out, keypoints shifted (those outside the
    window, edges included as in detectron2, become invisible: visibility 0). An object
    whose clipped box has no area is dropped with all its fields, as mmdetection's
    ``RandomCrop`` drops it."""
    height, width = size
    offset = torch.tensor([left, top], dtype=instances.boxes.dtype, device=instances.boxes.device)
    boxes = instances.boxes - offset.repeat(2)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    masks = instances.masks
    if masks is not None:
        masks = masks[:, top : top + height, left : left + width]
    keypoints = instances.keypoints
    if keypoints is not None:
        x = keypoints[..., 0] - left
        y = keypoints[..., 1] - top
        inside = (x >= 0) & (x <= width) & (y >= 0) & (y <= height)
        keypoints = torch.stack([x, y, keypoints[..., 2] * inside], dim=-1)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return replace(instances, boxes=boxes, masks=masks, keypoints=keypoints)[keep]


def hflip_instances(instances: Instances, width: int, *, flip_map: Sequence[tuple[int, int]] = ()) -> Instances:
    """Mirror left-right in an image ``width`` wide: ``x' = W - x``; keypoint pairs in
    ``flip_map`` swap places."""
    x1, y1, x2, y2 = instances.boxes.unbind(1)
    boxes = torch.stack([width - x2, y1, width - x1, y2], dim=1)
    masks = None if instances.masks is None else instances.masks.flip(-1)
    keypoints = instances.keypoints
    if keypoints is not None:
        order = list(range(keypoints.shape[1]))
        for i, j in flip_map:
            order[i], order[j] = j, i
        keypoints = keypoints[:, order].clone()
        keypoints[..., 0] = width - keypoints[..., 0]
    return replace(instances, boxes=boxes, masks=masks, keypoints=keypoints)


def keypoint_flip_map(names: Sequence[str]) -> list[tuple[int, int]]:
    """Index pairs of ``left_*`` / ``right_*`` keypoint names, for ``RandomFlip``."""
    index = {name: i for i, name in enumerate(names)}
    return [
        (i, index["right_" + name[5:]])
        for i, name in enumerate(names)
        if name.startswith("left_") and "right_" + name[5:] in index
    ]


def _randint(high: int, generator: torch.Generator | None) -> int:
    """Uniform in [0, high], drawn only when there is a choice (high > 0)."""
    return int(torch.randint(high + 1, (), generator=generator)) if high > 0 else 0


@dataclass(frozen=True, kw_only=True)
class Normalize:
    """RGB 0-255 -> the model's ``PixelFormat`` (channel order, scale, mean, std)."""

    pixel_format: PixelFormat

    def __call__(
        self, image: Tensor, *instances: Instances, generator: torch.Generator | None = None
    ) -> tuple[Tensor, ...]:
        return self.pixel_format.normalize(image), *instances


@dataclass(frozen=True, kw_only=True)
class Resize:
    """Keep-ratio resize: the shorter side to one of ``scales`` (a random one when there
    are several, as detectron2's multi-scale ``ResizeShortestEdge``), the longer side
    capped at ``max_size``.

    With ``ratio_range=(lo, hi)``, both limits are first multiplied by a ratio drawn
    uniformly from it and truncated to int, as mmdetection's ``RandomResize(scale=(long,
    short), ratio_range=(lo, hi), keep_ratio=True)``. ``convention`` picks the pixel
    arithmetic: ``"torchvision"`` (``resize_image``, on the normalised float image) or
    ``"mmdet"`` (``mmdet_resize_image``, on the 0-255 image). Instances follow with the
    per-axis ratios new / old size (``resize_instances``).
    """

    scales: tuple[int, ...]
    max_size: int
    ratio_range: tuple[float, float] | None = None
    convention: str = "torchvision"

    def __post_init__(self) -> None:
        if not self.scales:
            raise ConfigError(
                "Resize: scales (data.train_scales / data.test_scale) must name at least one shorter-side size"
            )
        if self.convention not in RESIZE_CONVENTIONS:
            raise ConfigError(
                f"Resize: convention (data.resize) must be one of {RESIZE_CONVENTIONS}, got {self.convention!r}"
            )
        if self.ratio_range is not None and not 0 < self.ratio_range[0] <= self.ratio_range[1]:
            raise ConfigError(
                f"Resize: ratio_range (data.scale_ratio_range) must be (lo, hi) with 0 < lo <= hi, "
                f"got {self.ratio_range}"
            )

    def __call__(
        self, image: Tensor, *instances: Instances, generator: torch.Generator | None = None
    ) -> tuple[Tensor, ...]:
        short = self.scales[_randint(len(self.scales) - 1, generator)]
        max_size = self.max_size
        if self.ratio_range is not None:
            lo, hi = self.ratio_range
            ratio = lo + (hi - lo) * float(torch.rand((), generator=generator)) if hi > lo else lo
            short, max_size = int(short * ratio), int(max_size * ratio)
        resize = resize_image if self.convention == "torchvision" else mmdet_resize_image
        resized = resize(image, short=short, max_size=max_size)
        sizes = tuple(image.shape[-2:]), tuple(resized.shape[-2:])
        return resized, *(resize_instances(t, *sizes) for t in instances)


@dataclass(frozen=True, kw_only=True)
class RandomCrop:
    """mmdetection's ``RandomCrop(crop_type='absolute', allow_negative_crop=True)``: a
    window of ``size`` (h, w) (smaller where the image is) at an offset uniform in
    [0, max(H - h, 0)] x [0, max(W - w, 0)]; instances as ``crop_instances``. A crop
    holding no object keeps the image with empty instances."""

    size: Size

    def __post_init__(self) -> None:
        if len(self.size) != 2 or min(self.size) <= 0:
            raise ConfigError(f"RandomCrop: size (data.crop_size) must be (h, w) with positive sides, got {self.size}")

    def __call__(
        self, image: Tensor, *instances: Instances, generator: torch.Generator | None = None
    ) -> tuple[Tensor, ...]:
        h, w = image.shape[-2:]
        top = _randint(max(h - self.size[0], 0), generator)
        left = _randint(max(w - self.size[1], 0), generator)
        cropped = image[:, top : top + self.size[0], left : left + self.size[1]]
        size = tuple(cropped.shape[-2:])
        return cropped, *(crop_instances(t, top=top, left=left, size=size) for t in instances)


@dataclass(frozen=True, kw_only=True)
class RandomFlip:
    """Horizontal flip with probability ``prob`` (``hflip_instances``; keypoint pairs of
    ``flip_map`` swap), as in torchvision, detectron2 and mmdetection."""

    prob: float
    flip_map: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        if not 0.0 <= self.prob <= 1.0:
            raise ConfigError(f"RandomFlip: flip_prob (data.flip_prob) must be in [0, 1], got {self.prob}")

    def __call__(
        self, image: Tensor, *instances: Instances, generator: torch.Generator | None = None
    ) -> tuple[Tensor, ...]:
        flip = self.prob == 1.0 or (self.prob > 0 and float(torch.rand((), generator=generator)) < self.prob)
        if not flip:
            return image, *instances
        width = image.shape[-1]
        return image.flip(-1), *(hflip_instances(t, width, flip_map=self.flip_map) for t in instances)


@dataclass(frozen=True, kw_only=True)
class Pad:
    """Zeros at the bottom / right up to ``size`` (h, w); instances unchanged. After
    ``Normalize`` this is mmdetection's ``BatchFixedSizePad`` (zeros in normalised units)."""

    size: Size

    def __call__(
        self, image: Tensor, *instances: Instances, generator: torch.Generator | None = None
    ) -> tuple[Tensor, ...]:
        h, w = image.shape[-2:]
        if h > self.size[0] or w > self.size[1]:
            raise ConfigError(
                f"Pad: image (h, w) {(h, w)} is larger than the pad size (data.pad_size) {tuple(self.size)}"
            )
        return F.pad(image, (0, self.size[1] - w, 0, self.size[0] - h)), *instances


@dataclass(frozen=True, kw_only=True)
class Compose:
    """``steps`` applied in order, each drawing from the same ``generator``."""

    steps: tuple[Transform, ...]

    def __call__(
        self, image: Tensor, *instances: Instances, generator: torch.Generator | None = None
    ) -> tuple[Tensor, ...]:
        for step in self.steps:
            image, *instances = step(image, *instances, generator=generator)
        return image, *instances


def build_transforms(
    *,
    train: bool,
    scales: Sequence[int] = (800,),
    max_size: int = 1333,
    flip_prob: float = 0.5,
    flip_map: Sequence[tuple[int, int]] = (),
    pixel_format: PixelFormat | None = None,
    resize: str = "torchvision",
    scale_ratio_range: tuple[float, float] | None = None,
    crop_size: Size | None = None,
    pad_size: Size | None = None,
) -> Compose:
    """Training: ``Normalize`` and ``Resize`` over ``scales`` (in the order of the
    ``resize`` convention: torchvision normalises first, mmdetection resizes first) ->
    ``RandomCrop`` (with ``crop_size``) -> ``RandomFlip`` -> ``Pad`` (with ``pad_size``).
    Test: ``Resize`` to ``scales[-1]`` (and ``Normalize``) only. Without a
    ``pixel_format`` the images stay RGB 0-255."""
    ratio_range = tuple(scale_ratio_range) if train and scale_ratio_range is not None else None
    resize_step = Resize(
        scales=tuple(scales) if train else tuple(scales)[-1:],
        max_size=max_size,
        ratio_range=ratio_range,
        convention=resize,
    )
    steps: list[Transform] = [resize_step]
    if pixel_format is not None:
        normalize = Normalize(pixel_format=pixel_format)
        steps = [normalize, resize_step] if resize == "torchvision" else [resize_step, normalize]
    if train:
        if crop_size is not None:
            steps.append(RandomCrop(size=tuple(crop_size)))
        steps.append(RandomFlip(prob=flip_prob, flip_map=tuple(map(tuple, flip_map))))
        if pad_size is not None:
            steps.append(Pad(size=tuple(pad_size)))
    return Compose(steps=tuple(steps))
