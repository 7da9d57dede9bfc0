"""The meta-architecture of every detector: backbone -> neck -> dense head -> RoI heads."""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch
from torch import Tensor, nn

from detzoo.errors import InputError
from detzoo.heads.box import RoIHeads
from detzoo.heads.retina import RetinaNet
from detzoo.heads.rpn import RPN
from detzoo.layers.conv import avx512_cpu
from detzoo.layers.keypoint_ops import heatmaps_to_keypoints
from detzoo.layers.mask_ops import PASTES, paste_masks
from detzoo.structures import ClassRows, ImageBatch, Instances, PixelFormat, Size, scale_boxes, scale_points


class DetectionModel(nn.Module):
    """Every detector: backbone -> neck -> dense head -> optional RoI heads. Images in,
    losses (training) or detections (eval) out.

    - ``dense_head``: ``RPN`` (class-agnostic) or ``RetinaNet`` (classifying); None for
      Fast R-CNN, whose proposals are given to ``forward`` in the input images' pixels.
    - ``roi_heads``: box head with optional mask / keypoint branches, on the dense head's
      outputs as proposals; None when the dense head's outputs are the result (an RPN's
      proposals, RetinaNet's detections).
    - ``neck``: None for C4 (heads read backbone maps).

    ``images``: (3, H, W) tensors already resized and normalised by the data pipeline in
    the model's ``pixel_format`` (built from ``input_format``, ``pixel_scale``,
    ``pixel_mean``, ``pixel_std``; see ``PixelFormat``). The model pads the batch with
    zeros to a multiple of ``size_divisibility``. Detections come back in the pixels of
    ``original_sizes`` when given (else of the input images); masks are pasted into them by
    the ``mask_paste`` convention (``detzoo.layers.mask_ops.PASTES``).
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        neck: nn.Module | None,
        dense_head: RPN | RetinaNet | None,
        roi_heads: RoIHeads | None,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        input_format: str = "RGB",
        pixel_scale: float = 1.0,
        size_divisibility: int = 32,
        mask_paste: str = "torchvision",
    ) -> None:
        super().__init__()
        if dense_head is None and roi_heads is None:
            raise ValueError("DetectionModel needs a dense head, RoI heads, or both")
        self.backbone = backbone
        self.neck = neck
        self.dense_head = dense_head
        self.roi_heads = roi_heads
        self.pixel_format = PixelFormat(
            channel_order=input_format, scale=float(pixel_scale), mean=tuple(pixel_mean), std=tuple(pixel_std)
        )
        self.size_divisibility = size_divisibility
        if mask_paste not in PASTES:
            raise ValueError(f"unknown mask_paste {mask_paste!r}; valid: {', '.join(PASTES)}")
        self.mask_paste = mask_paste

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def final_head(self) -> nn.Module:
        """The head whose outputs are the model's: the RoI heads, else the dense head."""
        return self.roi_heads if self.roi_heads is not None else self.dense_head

    @property
    def num_classes(self) -> int:
        """Classes of the outputs (1 for an RPN's class-agnostic proposals)."""
        return self.final_head.num_classes

    @property
    def outputs(self) -> tuple[str, ...]:
        """What ``forward`` predicts: ``("proposals",)`` for an RPN, else ``"boxes"`` and
        any of ``"masks"``, ``"keypoints"``."""
        return self.final_head.outputs

    @property
    def is_proposal_generator(self) -> bool:
        """True for an RPN: its outputs are class-agnostic proposals, not detections."""
        return "proposals" in self.outputs

    @property
    def nms_thresh(self) -> float:
        """IoU of the final head's class-wise NMS at inference (TTA merges with it)."""
        return self.final_head.nms_thresh

    @property
    def detections_per_image(self) -> int:
        """The final head's cap on detections per image (TTA keeps it)."""
        return self.final_head.detections_per_image

    @property
    def needs_proposals(self) -> bool:
        """True for Fast R-CNN: proposals come with the data."""
        return self.dense_head is None

    def pretrained_modules(self) -> dict[str, nn.Module]:
        """The parts an ImageNet classification ResNet's weights fill (``backbone.init``), by
        their prefix in its state dict: the backbone, and a C4 model's res5, which lives in
        its box head, as ``layer4.``."""
        res5 = None if self.roi_heads is None else self.roi_heads.res5
        return {"": self.backbone, **({"layer4.": res5} if res5 is not None else {})}

    def class_rows(self) -> dict[str, ClassRows]:
        """Every parameter whose rows follow the classes (or keypoints) the model predicts,
        by its state-dict name, as its head declares them (``class_rows()``)."""
        return {f"{name}.{key}": rows for name, module in self.named_modules()
                if name and hasattr(module, "class_rows") for key, rows in module.class_rows().items()}

    def compile_network(self) -> None:
        """``torch.compile`` the backbone and the neck in place (``runtime.compile``): the
        part that takes and returns tensors and holds most of the FLOPs. The heads'
        sampling, decoding and NMS stay eager. Names and weights are unchanged, so
        checkpoints load and save as before; the first call at each input size compiles."""
        self.backbone.compile()
        if self.neck is not None:
            self.neck.compile()

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
        results, losses = self.detect(batch, targets, proposals)
        if self.training:
            return losses
        return self.postprocess(results, batch)

    def features(self, batch: ImageBatch) -> dict[str, Tensor]:
        """The maps the heads read: the neck's, or the backbone's for C4, in the layout of
        ``memory_format``."""
        layout = memory_format(self.device, training=self.training)
        features = self.backbone(batch.tensor.contiguous(memory_format=layout))
        return features if self.neck is None else self.neck(features)

    def detect(
        self,
        batch: ImageBatch,
        targets: Sequence[Instances] | None = None,
        proposals: Sequence[Instances] | None = None,
        *,
        boxes_only: bool = False,
    ) -> tuple[list[Instances], dict[str, Tensor]]:
        """The network and its decoding (per-level top-k, NMS): detections in the pixels
        of the padded batch's images (Detectron's inference time X; masks as (N, S, S)
        probabilities, keypoints as (N, K, M, M) heatmap logits), and the losses when
        ``targets`` are given in training. ``boxes_only``: at inference, skip the mask and
        keypoint branches (test-time augmentation runs them after merging the boxes)."""
        if targets is not None:
            targets = [t.to(self.device) for t in targets]
        features = self.features(batch)
        losses = {}
        if self.dense_head is not None:
            results, losses = self.dense_head(features, batch, targets)
        elif proposals is None:
            raise InputError("this model has no dense head (Fast R-CNN): pass proposals=[Instances, ...] per image")
        else:
            results = [p.to(self.device) for p in proposals]
        if self.roi_heads is not None:
            results, roi_losses = self.roi_heads(features, results, batch.image_sizes, targets, boxes_only=boxes_only)
            losses.update(roi_losses)
        return results, losses

    def predict_masks(self, batch: ImageBatch, results: Sequence[Instances]) -> list[Instances]:
        """``results`` (boxes and labels in the pixels of ``batch``'s images) with ``masks``:
        the mask branch's probabilities of each box's class, (N, S, S), not yet pasted."""
        if "masks" not in self.outputs:
            raise ValueError(f"this model predicts {', '.join(self.outputs)}, not masks")
        return self.roi_heads.predict_masks(self.features(batch), [r.to(self.device) for r in results])

    def postprocess(self, results: Sequence[Instances], batch: ImageBatch) -> list[Instances]:
        """Detections mapped to ``batch.original_sizes`` (Detectron's post-processing time
        Y): boxes scaled, keypoints decoded and scaled, masks pasted and thresholded."""
        return [
            postprocess(r, from_size, to_size, self.mask_paste)
            for r, from_size, to_size in zip(results, batch.image_sizes, batch.original_sizes)
        ]


def memory_format(device: torch.device, *, training: bool) -> torch.memory_format:
    """The layout the network runs in: channels-last (NHWC) for inference, where the CPU's
    convolutions run faster on it and RoIAlign gathers each sample's channels from one row
    (GN layers take theirs contiguous, ``detzoo.layers.norm.GroupNorm``); in training too on
    a GPU and on a CPU with AVX-512, but NCHW on one without (AVX2), whose channels-last
    convolution backward runs ~3x slower than NCHW's (3x3, 256 channels, 2x200x336 map on a
    2-core AMD EPYC: 10.4 s against 3.6 s). Fixed per machine, so a resumed run computes as
    the first did."""
    if not training or device.type != "cpu" or avx512_cpu(device):
        return torch.channels_last
    return torch.contiguous_format


def postprocess(result: Instances, from_size: Size, to_size: Size, mask_paste: str = "torchvision") -> Instances:
    """Map detections from the resized input image to the original image: boxes scaled,
    keypoints decoded from their (N, K, M, M) heatmaps into (N, K, 3) x, y, score and
    scaled, masks pasted into the original image (``mask_paste`` convention) and
    thresholded at 0.5."""
    boxes = scale_boxes(result.boxes, from_size, to_size)
    keypoints = result.keypoints
    if keypoints is not None:
        points, scores = heatmaps_to_keypoints(keypoints, result.boxes)
        keypoints = scale_points(torch.cat([points[..., :2], scores[..., None]], dim=-1), from_size, to_size)
    masks = result.masks
    if masks is not None:
        masks = paste_masks(masks, boxes, tuple(to_size), convention=mask_paste) > 0.5
    return replace(result, boxes=boxes, keypoints=keypoints, masks=masks)
