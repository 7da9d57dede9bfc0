"""The two-stage meta-architecture: backbone -> neck -> RPN -> RoI heads."""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch
from torch import Tensor, nn

from detzoo.heads.box import RoIHeads
from detzoo.heads.rpn import RPN
from detzoo.layers.mask_ops import paste_masks
from detzoo.structures import ImageBatch, Instances, PixelFormat, Size, scale_boxes, scale_points


class TwoStageDetector(nn.Module):
    """Images in, losses (training) or detections (eval) out.

    Variants: no ``neck`` (C4: heads read backbone maps); no ``roi_heads`` (RPN only: the
    proposals, with objectness scores, are the detections); no ``rpn`` (Fast R-CNN:
    ``proposals`` given to ``forward``, in the input images' pixels).

    ``images``: (3, H, W) tensors already resized and normalised by the data pipeline in
    the model's ``pixel_format`` (built from ``input_format``, ``pixel_scale``,
    ``pixel_mean``, ``pixel_std``; see ``PixelFormat``). The model pads the batch with
    zeros to a multiple of ``size_divisibility``. Detections come back in the pixels of
    ``original_sizes`` when given (else of the input images).
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        neck: nn.Module | None,
        rpn: RPN | None,
        roi_heads: RoIHeads | None,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        input_format: str = "RGB",
        pixel_scale: float = 1.0,
        size_divisibility: int = 32,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.pixel_format = PixelFormat(
            channel_order=input_format, scale=float(pixel_scale), mean=tuple(pixel_mean), std=tuple(pixel_std)
        )
        self.size_divisibility = size_divisibility

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def preprocess(self, images: Sequence[Tensor], original_sizes: Sequence[Size] | None) -> ImageBatch:
        images = [im.to(self.device) for im in images]
        sizes = [tuple(im.shape[-2:]) for im in images]
        return ImageBatch.from_tensors(images, original_sizes or sizes, self.size_divisibility)

    def forward(
        self,
        images: Sequence[Tensor],
        targets: Sequence[Instances] | None = None,
        original_sizes: Sequence[Size] | None = None,
        proposals: Sequence[Instances] | None = None,
    ) -> dict[str, Tensor] | list[Instances]:
        batch = self.preprocess(images, original_sizes)
        if targets is not None:
            targets = [t.to(self.device) for t in targets]
        features = self.backbone(batch.tensor)
        if self.neck is not None:
            features = self.neck(features)
        losses = {}
        if self.rpn is not None:
            proposals, losses = self.rpn(features, batch, targets)
        elif proposals is None:
            raise ValueError("this model has no RPN (Fast R-CNN): pass proposals=[Instances, ...] per image")
        else:
            proposals = [p.to(self.device) for p in proposals]
        results = proposals
        if self.roi_heads is not None:
            results, roi_losses = self.roi_heads(features, proposals, batch.image_sizes, targets)
            losses.update(roi_losses)
        if self.training:
            return losses
        return [
            postprocess(r, from_size, to_size)
            for r, from_size, to_size in zip(results, batch.image_sizes, batch.original_sizes)
        ]


def postprocess(result: Instances, from_size: Size, to_size: Size) -> Instances:
    """Map detections from the resized input image to the original image: boxes and
    keypoints scaled, masks pasted into the original image and thresholded at 0.5."""
    boxes = scale_boxes(result.boxes, from_size, to_size)
    keypoints = None if result.keypoints is None else scale_points(result.keypoints, from_size, to_size)
    masks = result.masks
    if masks is not None:
        masks = paste_masks(masks, boxes, tuple(to_size)) > 0.5
    return replace(result, boxes=boxes, keypoints=keypoints, masks=masks)
