"""Mask and keypoint branches of the RoI heads (Mask R-CNN, Keypoint R-CNN).

Each branch pools its own features for the foreground proposals in training (with the
masks / keypoints of their matched ground truth) and for the final detections in
inference, where it adds per-instance masks or keypoints to the detections.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detzoo.layers.conv import conv_stack
from detzoo.layers.keypoint_ops import keypoint_loss, keypoint_targets
from detzoo.layers.mask_ops import mask_loss, mask_targets
from detzoo.layers.roi_pool import MultiLevelRoIAlign
from detzoo.structures import ClassRows, Instances


def _msra_stack(in_channels: int, conv_dim: int, num_convs: int, norm: str | None, conv_ws: bool) -> nn.ModuleList:
    convs = conv_stack(in_channels, conv_dim, num_convs, norm=norm, conv_ws=conv_ws)
    for conv in convs:
        nn.init.kaiming_normal_(conv[0].weight, mode="fan_out", nonlinearity="relu")
    return convs


def _msra(layer: nn.Module) -> nn.Module:
    nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
    nn.init.zeros_(layer.bias)
    return layer


class MaskHead(nn.Module):
    """``num_convs`` 3x3 convs + ReLU, a 2x2 stride-2 deconv to ``conv_dim`` + ReLU and a
    1x1 conv to one mask logit map per class: 14x14 pooled features -> 28x28 masks (C4:
    no convs, on 7x7 res5 features -> 14x14)."""

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        num_convs: int = 4,
        conv_dim: int = 256,
        norm: str | None = None,
        conv_ws: bool = False,
    ) -> None:
        super().__init__()
        self.convs = _msra_stack(in_channels, conv_dim, num_convs, norm, conv_ws)
        self.deconv = _msra(nn.ConvTranspose2d(conv_dim if num_convs else in_channels, conv_dim, 2, stride=2))
        self.predictor = nn.Conv2d(conv_dim, num_classes, 1)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.zeros_(self.predictor.bias)

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.convs:
            x = F.relu(conv(x))
        return self.predictor(F.relu(self.deconv(x)))

    def class_rows(self) -> dict[str, ClassRows]:
        """The parameters that have one row per class (``ClassRows``), by name."""
        return {"predictor.weight": ClassRows(), "predictor.bias": ClassRows()}


class KeypointHead(nn.Module):
    """``num_convs`` 3x3 convs + ReLU, a 4x4 stride-2 deconv to one heatmap per keypoint,
    then bilinear x2: 14x14 pooled features -> 56x56 heatmaps."""

    def __init__(self, *, in_channels: int, num_keypoints: int, num_convs: int = 8, conv_dim: int = 512) -> None:
        super().__init__()
        self.convs = _msra_stack(in_channels, conv_dim, num_convs, None, False)
        self.deconv = _msra(nn.ConvTranspose2d(conv_dim if num_convs else in_channels, num_keypoints, 4, 2, 1))

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.convs:
            x = F.relu(conv(x))
        x = self.deconv(x)
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False, recompute_scale_factor=False)

    def class_rows(self) -> dict[str, ClassRows]:
        """The parameters that have one row per keypoint (``ClassRows``), by name."""
        keypoints = ClassRows(follows="keypoints")
        return {"deconv.weight": ClassRows(dim=1, follows="keypoints"), "deconv.bias": keypoints}


class _Branch(nn.Module):
    def __init__(self, *, pooler: MultiLevelRoIAlign, head: nn.Module, in_features: Sequence[str]) -> None:
        super().__init__()
        self.pooler = pooler
        self.head = head
        self.in_features = list(in_features)

    def _head(self, features: Mapping[str, Tensor], boxes: Sequence[Tensor]) -> Tensor:
        """The head's logits in fp32 (under mixed precision too): losses, mask pasting and
        keypoint decoding read them."""
        return self.head(self.pooler([features[f] for f in self.in_features], boxes)).float()


class MaskBranch(_Branch):
    """Training: per-pixel BCE on the gt class's 28x28 mask. Inference: ``masks`` of
    each detection = sigmoid of its class's map (pasted into the image later)."""

    def losses(
        self,
        features: Mapping[str, Tensor],
        boxes: Sequence[Tensor],
        labels: Sequence[Tensor],
        gt_masks: Sequence[Tensor],
    ) -> dict[str, Tensor]:
        logits = self._head(features, boxes)
        targets = torch.cat(
            [mask_targets(m, b, size=logits.shape[-1]) for m, b in zip(gt_masks, boxes)]
        )
        return {"loss_mask": mask_loss(logits, torch.cat(labels), targets)}

    def predict(self, features: Mapping[str, Tensor], results: Sequence[Instances]) -> list[Instances]:
        logits = self._head(features, [r.boxes for r in results])
        labels = torch.cat([r.labels for r in results])
        # shape[0], not len(): a traced size stays in the graph (ONNX export)
        probs = logits[torch.arange(labels.shape[0], device=labels.device), labels].sigmoid()
        return [replace(r, masks=p) for r, p in zip(results, probs.split([r.boxes.shape[0] for r in results]))]


class KeypointBranch(_Branch):
    """Training: softmax cross-entropy over the 56x56 heatmap of each visible keypoint,
    normalised by their number. Inference: ``keypoints`` of each detection = its (K, 56, 56)
    heatmap logits, which ``detzoo.detectors.model.postprocess`` decodes into (K, 3) x, y,
    score (Detectron's post-processing, as mask pasting; a per-box loop over data-dependent
    sizes, outside an exported ONNX graph)."""

    def losses(
        self, features: Mapping[str, Tensor], boxes: Sequence[Tensor], gt_keypoints: Sequence[Tensor]
    ) -> dict[str, Tensor]:
        logits = self._head(features, boxes)
        targets = [keypoint_targets(k, b, heatmap_size=logits.shape[-1]) for k, b in zip(gt_keypoints, boxes)]
        heatmaps = torch.cat([t[0] for t in targets])
        valid = torch.cat([t[1] for t in targets])
        return {"loss_keypoint": keypoint_loss(logits, heatmaps, valid)}

    def predict(self, features: Mapping[str, Tensor], results: Sequence[Instances]) -> list[Instances]:
        logits = self._head(features, [r.boxes for r in results])
        return [replace(r, keypoints=lg) for r, lg in zip(results, logits.split([r.boxes.shape[0] for r in results]))]
