"""Region Proposal Network (Ren et al. 2015), over one feature map (C4) or a pyramid (FPN)."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detzoo.heads.dense import anchor_targets, decode_level, permute_to_nhwa_k
from detzoo.layers.anchors import AnchorGenerator
from detzoo.layers.boxes import BoxCoder, Matcher, sample_balanced, select_boxes
from detzoo.structures import ImageBatch, Instances


class RPNHead(nn.Module):
    """3x3 conv to ``conv_dim`` channels (default: ``in_channels``; mmdetection: 256 at any
    neck width) + ReLU shared over levels, then 1x1 convs for ``num_anchors`` objectness
    logits and ``4 * num_anchors`` box deltas per location (channel ``4a + k`` is delta
    ``k`` of anchor ``a``)."""

    def __init__(self, *, in_channels: int, num_anchors: int, conv_dim: int | None = None) -> None:
        super().__init__()
        conv_dim = conv_dim or in_channels
        self.conv = nn.Conv2d(in_channels, conv_dim, 3, padding=1)
        self.objectness = nn.Conv2d(conv_dim, num_anchors, 1)
        self.deltas = nn.Conv2d(conv_dim, 4 * num_anchors, 1)
        for layer in (self.conv, self.objectness, self.deltas):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, features: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level: objectness logits (N, H*W*A, 1) and deltas (N, H*W*A, 4)."""
        logits, deltas = [], []
        for x in features:
            t = F.relu(self.conv(x))
            logits.append(permute_to_nhwa_k(self.objectness(t), 1))
            deltas.append(permute_to_nhwa_k(self.deltas(t), 4))
        return logits, deltas


class RPN(nn.Module):
    """The class-agnostic dense head: anchors, head, training targets/losses and proposal
    selection. Its outputs are proposals (``num_classes`` 1, label 0, objectness scores).

    Proposals per image: the ``pre_nms_topk`` best anchors of each level, decoded and
    clipped, boxes smaller than ``min_size`` dropped, NMS per level at ``nms_thresh``, then
    the ``post_nms_topk`` best over all levels. Losses: binary cross-entropy on
    ``batch_size_per_image`` sampled anchors and smooth-L1 (``beta``; 0 is L1) on the
    positive ones, both normalised by the number of sampled anchors.
    ``clamp_shrink``: dw / dh also clamped from below when decoding (mmdetection; see
    ``BoxCoder``).
    """

    def __init__(
        self,
        *,
        head: RPNHead,
        anchor_generator: AnchorGenerator,
        in_features: Sequence[str],
        fg_iou: float = 0.7,
        bg_iou: float = 0.3,
        batch_size_per_image: int = 256,
        positive_fraction: float = 0.5,
        pre_nms_topk_train: int = 2000,
        pre_nms_topk_test: int = 1000,
        post_nms_topk_train: int = 1000,
        post_nms_topk_test: int = 1000,
        nms_thresh: float = 0.7,
        min_size: float = 0.0,
        smooth_l1_beta: float = 0.0,
        clamp_shrink: bool = False,
    ) -> None:
        super().__init__()
        self.head = head
        self.anchor_generator = anchor_generator
        self.in_features = list(in_features)
        self.box_coder = BoxCoder((1.0, 1.0, 1.0, 1.0), clamp_shrink=clamp_shrink)
        self.matcher = Matcher(fg_iou, bg_iou, allow_low_quality=True)
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.pre_nms_topk = {True: pre_nms_topk_train, False: pre_nms_topk_test}
        self.post_nms_topk = {True: post_nms_topk_train, False: post_nms_topk_test}
        self.nms_thresh = nms_thresh
        self.min_size = min_size
        self.smooth_l1_beta = smooth_l1_beta

    num_classes = 1
    outputs = ("proposals",)

    def forward(
        self, features: Mapping[str, Tensor], batch: ImageBatch, targets: Sequence[Instances] | None = None
    ) -> tuple[list[Instances], dict[str, Tensor]]:
        xs = [features[name] for name in self.in_features]
        logits, deltas = self.head(xs)
        anchors = self.anchor_generator(
            tuple(batch.tensor.shape[-2:]), [tuple(x.shape[-2:]) for x in xs], xs[0].device
        )
        proposals = self.select_proposals(anchors, logits, deltas, batch.image_sizes)
        losses = {}
        if self.training:
            if targets is None:
                raise ValueError("RPN: targets are required in training mode")
            losses = self.losses(torch.cat(anchors), torch.cat(logits, 1), torch.cat(deltas, 1), targets)
        return proposals, losses

    @torch.no_grad()
    def select_proposals(
        self,
        anchors: list[Tensor],
        logits: list[Tensor],
        deltas: list[Tensor],
        image_sizes: Sequence[tuple[int, int]],
    ) -> list[Instances]:
        topk = self.pre_nms_topk[self.training]
        out = []
        for i, size in enumerate(image_sizes):
            per_level = [
                decode_level(self.box_coder, d[i], a, lg[i], topk) for a, lg, d in zip(anchors, logits, deltas)
            ]
            b = torch.cat([p[0] for p in per_level])
            s = torch.cat([p[1] for p in per_level]).sigmoid()
            lvl = torch.cat([torch.full_like(p[2], level) for level, p in enumerate(per_level)])
            b, s, lvl = select_boxes(
                b, s, lvl, image_size=size, min_size=self.min_size, nms_thresh=self.nms_thresh,
                max_count=self.post_nms_topk[self.training],
            )
            out.append(Instances(boxes=b, labels=torch.zeros_like(lvl), scores=s))
        return out

    def losses(
        self, anchors: Tensor, logits: Tensor, deltas: Tensor, targets: Sequence[Instances]
    ) -> dict[str, Tensor]:
        matched, box_targets = anchor_targets(self.matcher, self.box_coder, anchors, targets)
        labels = []
        for m in matched:
            fg, bg = sample_balanced(
                m >= 0,
                m == Matcher.BACKGROUND,
                num_samples=self.batch_size_per_image,
                positive_fraction=self.positive_fraction,
            )
            sampled = torch.full(m.shape, -1.0, device=m.device)
            sampled[fg], sampled[bg] = 1.0, 0.0
            labels.append(sampled)
        labels = torch.stack(labels)
        logits = logits[..., 0]
        valid, fg = labels >= 0, labels == 1
        num = valid.sum().clamp(min=1)
        return {
            "loss_rpn_cls": F.binary_cross_entropy_with_logits(logits[valid], labels[valid], reduction="sum") / num,
            "loss_rpn_box": F.smooth_l1_loss(
                deltas[fg], box_targets[fg], beta=self.smooth_l1_beta, reduction="sum"
            )
            / num,
        }
