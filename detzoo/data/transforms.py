"""Pure transforms on ``(image, instances)``: pixel normalisation, resize of the shorter
side, horizontal flip.

Images are (3, H, W) float tensors; boxes, masks and keypoints follow the image. The
pipeline normalises first, in the ``PixelFormat`` the model declares, then resizes, as
torchvision does, so that a converted torchvision model sees its input to the last bit.
``build_transforms`` makes the one training / test pipeline; its randomness comes from
the torch RNG, so ``torch.manual_seed`` (and DataLoader worker seeding) reproduces it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from detzoo.structures import Instances, PixelFormat, scale_boxes, scale_points

Transform = Callable[..., tuple[Tensor, ...]]  # (image, *instances, generator=None)


def resize_image(image: Tensor, *, short: int, max_size: int) -> Tensor:
    """Scale so the shorter side is ``short`` unless the longer would exceed ``max_size``,
    with the arithmetic of torchvision's ``GeneralizedRCNNTransform.resize`` (bilinear)."""
    h, w = image.shape[-2:]
    scale = min(short / min(h, w), max_size / max(h, w))
    return F.interpolate(
        image[None], scale_factor=scale, mode="bilinear", recompute_scale_factor=True, align_corners=False
    )[0]


def resize_instances(instances: Instances, from_size: tuple[int, int], to_size: tuple[int, int]) -> Instances:
    """Boxes and keypoints scaled by the per-axis float32 size ratios, masks nearest."""
    masks = instances.masks
    if masks is not None:
        masks = F.interpolate(masks[:, None].float(), size=tuple(to_size))[:, 0].to(masks.dtype)
    keypoints = instances.keypoints
    if keypoints is not None:
        keypoints = scale_points(keypoints, from_size, to_size)
    boxes = scale_boxes(instances.boxes, from_size, to_size)
    return replace(instances, boxes=boxes, masks=masks, keypoints=keypoints)


def resize_shortest_edge(
    image: Tensor, instances: Instances, *, short: int, max_size: int
) -> tuple[Tensor, Instances]:
    """``resize_image`` with the instances following."""
    resized = resize_image(image, short=short, max_size=max_size)
    return resized, resize_instances(instances, tuple(image.shape[-2:]), tuple(resized.shape[-2:]))


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


def hflip(
    image: Tensor, instances: Instances, *, flip_map: Sequence[tuple[int, int]] = ()
) -> tuple[Tensor, Instances]:
    """``hflip_instances`` with the image mirrored too."""
    return image.flip(-1), hflip_instances(instances, image.shape[-1], flip_map=flip_map)


def keypoint_flip_map(names: Sequence[str]) -> list[tuple[int, int]]:
    """Index pairs of ``left_*`` / ``right_*`` keypoint names, for ``hflip``."""
    index = {name: i for i, name in enumerate(names)}
    return [
        (i, index["right_" + name[5:]])
        for i, name in enumerate(names)
        if name.startswith("left_") and "right_" + name[5:] in index
    ]


@dataclass(frozen=True)
class ResizeFlip:
    """Normalise (when a ``pixel_format`` is given), resize the shorter side to a random
    one of ``scales``, then flip with ``flip_prob``.

    Random draws come from ``generator`` (the global torch RNG when None), and only when
    there is a choice (several scales, flip_prob > 0).
    """

    scales: tuple[int, ...]
    max_size: int
    flip_prob: float
    flip_map: tuple[tuple[int, int], ...] = ()
    pixel_format: PixelFormat | None = None

    def __call__(
        self, image: Tensor, *targets: Instances, generator: torch.Generator | None = None
    ) -> tuple[Tensor, ...]:
        """``(image, *targets)`` transformed alike (targets: ground truth, proposals)."""
        if self.pixel_format is not None:
            image = self.pixel_format.normalize(image)
        short = self.scales[0]
        if len(self.scales) > 1:
            short = self.scales[int(torch.randint(len(self.scales), (), generator=generator))]
        resized = resize_image(image, short=short, max_size=self.max_size)
        sizes = tuple(image.shape[-2:]), tuple(resized.shape[-2:])
        targets = tuple(resize_instances(t, *sizes) for t in targets)
        if self.flip_prob > 0 and float(torch.rand((), generator=generator)) < self.flip_prob:
            width = resized.shape[-1]
            return resized.flip(-1), *(hflip_instances(t, width, flip_map=self.flip_map) for t in targets)
        return resized, *targets


def build_transforms(
    *,
    train: bool,
    scales: Sequence[int] = (800,),
    max_size: int = 1333,
    flip_prob: float = 0.5,
    flip_map: Sequence[tuple[int, int]] = (),
    pixel_format: PixelFormat | None = None,
) -> ResizeFlip:
    """Training: multi-scale over ``scales`` and random flip. Test: ``scales[-1]``, no flip."""
    if not scales:
        raise ValueError("build_transforms: scales must name at least one shorter-side size")
    if not 0.0 <= flip_prob <= 1.0:
        raise ValueError(f"build_transforms: flip_prob must be in [0, 1], got {flip_prob}")
    if train:
        return ResizeFlip(tuple(scales), max_size, flip_prob, tuple(map(tuple, flip_map)), pixel_format)
    return ResizeFlip((scales[-1],), max_size, 0.0, pixel_format=pixel_format)
