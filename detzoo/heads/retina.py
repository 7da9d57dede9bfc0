"""RetinaNet (Lin et al. 2017): a classifying dense head with focal loss, over P3-P7."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import sigmoid_focal_loss

from detzoo.heads.dense import anchor_targets, decode_level, permute_to_nhwa_k
from detzoo.layers.anchors import AnchorGenerator
from detzoo.layers.boxes import BoxCoder, Matcher, select_boxes
from detzoo.layers.conv import conv_stack
from detzoo.layers.norm import build_norm
from detzoo.structures import ClassRows, ImageBatch, Instances


class RetinaNetHead(nn.Module):
    """Two towers of ``num_convs`` 3x3 convs + ReLU shared over the levels, then a 3x3
    conv to ``num_anchors * num_classes`` class logits and one to ``4 * num_anchors``
    box deltas per location.

    ``norm`` (NAS-FPN's head, mmdetection's ``RetinaSepBNHead``): the convs stay shared
    but each of the ``num_levels`` levels has its own norm after every conv (levels have
    different statistics); the convs then have no bias. Init: normal(0.01) weights, zero
    biases, the class bias at ``-log((1 - prior_prob) / prior_prob)``.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_anchors: int,
        num_classes: int,
        num_levels: int,
        num_convs: int = 4,
        conv_dim: int = 256,
        norm: str | None = None,
        prior_prob: float = 0.01,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.cls_convs = conv_stack(in_channels, conv_dim, num_convs, bias=norm is None)
        self.box_convs = conv_stack(in_channels, conv_dim, num_convs, bias=norm is None)
        self.cls_norms = self._level_norms(norm, num_levels, num_convs, conv_dim)
        self.box_norms = self._level_norms(norm, num_levels, num_convs, conv_dim)
        self.cls_logits = nn.Conv2d(conv_dim, num_anchors * num_classes, 3, padding=1)
        self.deltas = nn.Conv2d(conv_dim, num_anchors * 4, 3, padding=1)
        for conv in [c[0] for c in (*self.cls_convs, *self.box_convs)] + [self.cls_logits, self.deltas]:
            nn.init.normal_(conv.weight, std=0.01)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))

    @staticmethod
    def _level_norms(norm: str | None, num_levels: int, num_convs: int, channels: int) -> nn.ModuleList | None:
        if norm is None:
            return None
        return nn.ModuleList(
            nn.ModuleList(build_norm(norm, channels) for _ in range(num_convs)) for _ in range(num_levels)
        )

    @staticmethod
    def _tower(x: Tensor, convs: nn.ModuleList, norms: nn.ModuleList | None) -> Tensor:
        for i, conv in enumerate(convs):
            x = conv(x)
            if norms is not None:
                x = norms[i](x)
            x = F.relu(x)
        return x

    def forward(self, features: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level: class logits (N, H*W*A, num_classes) and deltas (N, H*W*A, 4)."""
        logits, deltas = [], []
        for level, x in enumerate(features):
            cls_norms = None if self.cls_norms is None else self.cls_norms[level]
            box_norms = None if self.box_norms is None else self.box_norms[level]
            cls_features = self._tower(x, self.cls_convs, cls_norms)
            logits.append(permute_to_nhwa_k(self.cls_logits(cls_features), self.num_classes))
            deltas.append(permute_to_nhwa_k(self.deltas(self._tower(x, self.box_convs, box_norms)), 4))
        return logits, deltas

    def class_rows(self) -> dict[str, ClassRows]:
        """The parameters with rows per class (``ClassRows``): the class logits, one block
        of ``num_classes`` rows per anchor."""
        return {"cls_logits.weight": ClassRows(), "cls_logits.bias": ClassRows()}


class RetinaNet(nn.Module):
    """The RetinaNet dense head: anchors, head, focal-loss training and detection.

    Training: anchors with IoU >= ``fg_iou`` to some gt are positive (and every gt's best
    anchors), below ``bg_iou`` negative, the rest ignored; sigmoid focal loss (``alpha``,
    ``gamma``) over positive and negative anchors and smooth-L1 (``smooth_l1_beta``; 0 is
    L1) on the positives' deltas, both summed and divided by the number of positives.
    Inference, per image: on each level the ``topk_candidates`` best (anchor, class) pairs
    with probability above ``score_thresh``, decoded and clipped; boxes smaller than
    ``min_size`` dropped; class-wise NMS at ``nms_thresh``; the ``detections_per_image`` best.
    ``clamp_shrink``: dw / dh also clamped from below when decoding (mmdetection; see
    ``BoxCoder``).
    """

    def __init__(
        self,
        *,
        head: RetinaNetHead,
        anchor_generator: AnchorGenerator,
        in_features: Sequence[str],
        fg_iou: float = 0.5,
        bg_iou: float = 0.4,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        smooth_l1_beta: float = 0.0,
        box_coder_weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
        topk_candidates: int = 1000,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_image: int = 100,
        min_size: float = 0.0,
        clamp_shrink: bool = False,
    ) -> None:
        super().__init__()
        self.head = head
        self.anchor_generator = anchor_generator
        self.in_features = list(in_features)
        self.matcher = Matcher(fg_iou, bg_iou, allow_low_quality=True)
        self.box_coder = BoxCoder(box_coder_weights, clamp_shrink=clamp_shrink)
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.smooth_l1_beta = smooth_l1_beta
        self.topk_candidates = topk_candidates
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_image = detections_per_image
        self.min_size = min_size

    outputs = ("boxes",)

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    def forward(
        self, features: Mapping[str, Tensor], batch: ImageBatch, targets: Sequence[Instances] | None = None
    ) -> tuple[list[Instances], dict[str, Tensor]]:
        xs = [features[name] for name in self.in_features]
        logits, deltas = self.head(xs)
        anchors = self.anchor_generator(
            tuple(batch.tensor.shape[-2:]), [tuple(x.shape[-2:]) for x in xs], xs[0].device
        )
        if self.training:
            if targets is None:
                raise ValueError("RetinaNet: targets are required in training mode")
            return [], self.losses(torch.cat(anchors), torch.cat(logits, 1), torch.cat(deltas, 1), targets)
        return self.detect(anchors, logits, deltas, batch.image_sizes), {}

    def losses(
        self, anchors: Tensor, logits: Tensor, deltas: Tensor, targets: Sequence[Instances]
    ) -> dict[str, Tensor]:
        matched, box_targets = anchor_targets(self.matcher, self.box_coder, anchors, targets)
        fg = matched >= 0
        valid = fg | (matched == Matcher.BACKGROUND)
        gt_labels = torch.stack(
            [t.labels[m.clamp(min=0)] if len(t) else m.clamp(min=0) for t, m in zip(targets, matched)]
        )
        cls_targets = torch.zeros_like(logits)
        cls_targets[fg, gt_labels[fg]] = 1.0
        num_fg = max(fg.sum().item(), 1)
        loss_cls = sigmoid_focal_loss(
            logits[valid], cls_targets[valid], alpha=self.focal_alpha, gamma=self.focal_gamma, reduction="sum"
        )
        loss_box = F.smooth_l1_loss(deltas[fg], box_targets[fg], beta=self.smooth_l1_beta, reduction="sum")
        return {"loss_retina_cls": loss_cls / num_fg, "loss_retina_box": loss_box / num_fg}

    @torch.no_grad()
    def detect(
        self,
        anchors: list[Tensor],
        logits: list[Tensor],
        deltas: list[Tensor],
        image_sizes: Sequence[tuple[int, int]],
    ) -> list[Instances]:
        out = []
        for i, size in enumerate(image_sizes):
            per_level = [
                decode_level(self.box_coder, d[i], a, lg[i].sigmoid(), self.topk_candidates, self.score_thresh)
                for a, lg, d in zip(anchors, logits, deltas)
            ]
            boxes, scores, labels = (torch.cat(field) for field in zip(*per_level))
            boxes, scores, labels = select_boxes(
                boxes, scores, labels, image_size=size, min_size=self.min_size, nms_thresh=self.nms_thresh,
                max_count=self.detections_per_image,
            )
            out.append(Instances(boxes=boxes, labels=labels, scores=scores))
        return out
