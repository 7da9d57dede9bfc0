"""The box branch of the RoI heads: pooled features -> box head -> class scores and
class-specific box deltas, with training targets, losses and inference."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_iou

from detzoo.layers.boxes import BoxCoder, Matcher, sample_balanced, select_boxes
from detzoo.heads.mask_keypoint import KeypointBranch, MaskBranch
from detzoo.layers.conv import avx512_cpu, conv_stack
from detzoo.layers.roi_pool import MultiLevelRoIAlign
from detzoo.structures import ClassRows, Instances


class ConvFCBoxHead(nn.Module):
    """``num_convs`` 3x3 convs (+ norm) then ``num_fcs`` fully connected layers, ReLU after
    each: ``2fc`` (num_convs=0, num_fcs=2) and ``4conv1fc`` (GN models)."""

    def __init__(
        self,
        *,
        in_channels: int,
        pooled_size: int,
        num_convs: int = 0,
        conv_dim: int = 256,
        num_fcs: int = 2,
        fc_dim: int = 1024,
        norm: str | None = None,
        conv_ws: bool = False,
    ) -> None:
        super().__init__()
        self.convs = conv_stack(in_channels, conv_dim, num_convs, norm=norm, conv_ws=conv_ws)
        dim = (conv_dim if num_convs else in_channels) * pooled_size**2
        self.fcs = nn.ModuleList()
        for _ in range(num_fcs):
            fc = nn.Linear(dim, fc_dim)
            nn.init.kaiming_uniform_(fc.weight, a=1)
            nn.init.zeros_(fc.bias)
            self.fcs.append(fc)
            dim = fc_dim
        self.out_channels = dim

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.convs:
            x = F.relu(conv(x))
        if not self.fcs:
            return x.flatten(1)
        x = F.relu(map_linear(self.fcs[0], x))
        for fc in self.fcs[1:]:
            x = F.relu(fc(x))
        return x


def map_linear(fc: nn.Linear, x: Tensor) -> Tensor:
    """``fc(x.flatten(1))`` of (N, C, H, W) maps. On a CPU with AVX-512 as a convolution whose
    kernel covers the map (the same sums of products): oneDNN's convolution takes RoIAlign's
    channels-last maps as they are, where flattening copies them into the layout MKL's matrix
    product wants (Faster R-CNN's fc6 on 1000 RoIs: 1.1-1.4x faster forward, 1.05x forward +
    backward, on a 2-core AMD EPYC with AVX-512). Elsewhere the matrix product: on a CPU with
    AVX2 oneDNN runs that convolution ~10x slower than it (the same fc6 on a 2-core AMD EPYC
    without AVX-512: 2.6 s against 0.22-0.29 s forward, 8.3-11.1 s against 0.71-0.84 s forward
    + backward), on CUDA cuBLAS's (as torchvision), and in a traced model (ONNX export: a
    ``Gemm``, as before)."""
    if not avx512_cpu(x.device) or torch.jit.is_tracing():
        return fc(x.flatten(1))
    return F.conv2d(x, fc.weight.reshape(fc.out_features, *x.shape[1:]), fc.bias).flatten(1)


class Res5BoxHead(nn.Module):
    """C4: the res5 stage (stride 2 in its first block) on 14x14 RoI features of res4,
    mean-pooled. The mask branch of a C4 Mask R-CNN runs the same res5 module."""

    def __init__(self, *, res5: nn.Sequential, out_channels: int) -> None:
        super().__init__()
        self.res5 = res5
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        return self.res5(x).mean(dim=(2, 3))


class BoxPredictor(nn.Module):
    """Class logits over ``num_classes`` + 1 (background last) and per-class deltas, in
    fp32 (under mixed precision too: losses and box decoding read them)."""

    def __init__(self, *, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.cls_score = nn.Linear(in_channels, num_classes + 1)
        self.bbox_pred = nn.Linear(in_channels, num_classes * 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.cls_score(x).float(), self.bbox_pred(x).float()

    def class_rows(self) -> dict[str, ClassRows]:
        """The parameters with rows per class (``ClassRows``): the logits (background last)
        and the class-specific deltas, 4 rows each."""
        logits, deltas = ClassRows(extra=1), ClassRows(width=4)
        return {"cls_score.weight": logits, "cls_score.bias": logits,
                "bbox_pred.weight": deltas, "bbox_pred.bias": deltas}


class RoIHeads(nn.Module):
    """Fast R-CNN box head on proposals, with optional mask and keypoint branches.

    Training: ground-truth boxes join the proposals; each proposal takes the class of the
    gt it overlaps by >= ``fg_iou`` (background below); ``batch_size_per_image`` are
    sampled with at most ``positive_fraction`` foreground; loss = cross-entropy + smooth-L1
    (``beta``; 0 is L1) on the gt class's deltas, normalised by the sampled count.
    Inference: softmax, per-class decoding, clipping, score > ``score_thresh``, boxes
    smaller than ``min_size`` dropped, per-class NMS, best ``detections_per_image``.
    The mask / keypoint branches train on the sampled foreground proposals with their
    matched ground truth and run on the final detections.
    ``clamp_shrink``: dw / dh also clamped from below when decoding (mmdetection; see
    ``BoxCoder``).
    """

    def __init__(
        self,
        *,
        pooler: MultiLevelRoIAlign,
        box_head: nn.Module,
        predictor: BoxPredictor,
        in_features: Sequence[str],
        num_classes: int,
        fg_iou: float = 0.5,
        bg_iou: float = 0.5,
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        box_coder_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
        smooth_l1_beta: float = 0.0,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_image: int = 100,
        min_size: float = 0.0,
        mask: MaskBranch | None = None,
        keypoint: KeypointBranch | None = None,
        clamp_shrink: bool = False,
    ) -> None:
        super().__init__()
        self.pooler = pooler
        self.box_head = box_head
        self.predictor = predictor
        self.in_features = list(in_features)
        self.num_classes = num_classes
        self.matcher = Matcher(fg_iou, bg_iou, allow_low_quality=False)
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.box_coder = BoxCoder(box_coder_weights, clamp_shrink=clamp_shrink)
        self.smooth_l1_beta = smooth_l1_beta
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_image = detections_per_image
        self.min_size = min_size
        self.mask = mask
        self.keypoint = keypoint

    @property
    def res5(self) -> nn.Sequential | None:
        """The res5 stage of a C4 box head (a backbone stage kept here), else None."""
        return self.box_head.res5 if isinstance(self.box_head, Res5BoxHead) else None

    @property
    def outputs(self) -> tuple[str, ...]:
        """``boxes``, then ``masks`` / ``keypoints`` when those branches exist."""
        return ("boxes",) + ("masks",) * (self.mask is not None) + ("keypoints",) * (self.keypoint is not None)

    def forward(
        self,
        features: Mapping[str, Tensor],
        proposals: Sequence[Instances],
        image_sizes: Sequence[tuple[int, int]],
        targets: Sequence[Instances] | None = None,
        *,
        boxes_only: bool = False,
    ) -> tuple[list[Instances], dict[str, Tensor]]:
        """Training: the losses. Inference: the detections, with masks / keypoints unless
        ``boxes_only``."""
        boxes = [p.boxes for p in proposals]
        if self.training:
            if targets is None:
                raise ValueError("RoIHeads: targets are required in training mode")
            boxes, labels, box_targets, matched = self.sample(boxes, targets)
        x = self.pooler([features[f] for f in self.in_features], boxes)
        logits, deltas = self.predictor(self.box_head(x))
        if not self.training:
            results = self.inference(logits, deltas, boxes, image_sizes)
            if not boxes_only and self.mask is not None:
                results = self.predict_masks(features, results)
            if not boxes_only and self.keypoint is not None:
                results = self.keypoint.predict(features, results)
            return results, {}
        losses = self.losses(logits, deltas, torch.cat(labels), torch.cat(box_targets))
        fg = [torch.nonzero(lb < self.num_classes).flatten() for lb in labels]
        fg_boxes = [b[i] for b, i in zip(boxes, fg)]
        fg_gt = [m[i] for m, i in zip(matched, fg)]
        if self.mask is not None:
            losses.update(
                self.mask.losses(
                    features, fg_boxes, [lb[i] for lb, i in zip(labels, fg)],
                    [t.masks[g] for t, g in zip(targets, fg_gt)],
                )
            )
        if self.keypoint is not None:
            losses.update(self.keypoint.losses(features, fg_boxes, [t.keypoints[g] for t, g in zip(targets, fg_gt)]))
        return [], losses

    def predict_masks(self, features: Mapping[str, Tensor], results: Sequence[Instances]) -> list[Instances]:
        """``results`` with ``masks``: the mask branch's (N, S, S) probabilities of each
        box's class (``labels``), for boxes in the pixels of the images of ``features``."""
        if self.mask is None:
            raise ValueError("these RoI heads have no mask branch")
        return self.mask.predict(features, results)

    @torch.no_grad()
    def sample(
        self, proposals: Sequence[Tensor], targets: Sequence[Instances]
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        """Sampled boxes, their labels (``num_classes`` = background), box targets and
        matched gt indices (meaningful for the foreground, which comes first)."""
        out_boxes, out_labels, out_targets, out_matched = [], [], [], []
        for boxes, t in zip(proposals, targets):
            boxes = torch.cat([boxes, t.boxes])
            matched = self.matcher.match(box_iou(t.boxes, boxes))
            fg_mask = matched >= 0
            bg_mask = matched == Matcher.BACKGROUND
            fg, bg = sample_balanced(
                fg_mask, bg_mask, num_samples=self.batch_size_per_image, positive_fraction=self.positive_fraction
            )
            idx = torch.cat([fg, bg])
            labels = torch.full((idx.numel(),), self.num_classes, dtype=torch.int64, device=boxes.device)
            labels[: fg.numel()] = t.labels[matched[fg]]
            gt = torch.zeros_like(boxes[idx])
            gt[: fg.numel()] = t.boxes[matched[fg]]
            out_boxes.append(boxes[idx])
            out_labels.append(labels)
            out_targets.append(self.box_coder.encode(gt, boxes[idx]))
            out_matched.append(matched[idx].clamp(min=0))
        return out_boxes, out_labels, out_targets, out_matched

    def losses(self, logits: Tensor, deltas: Tensor, labels: Tensor, box_targets: Tensor) -> dict[str, Tensor]:
        fg = torch.nonzero(labels < self.num_classes).flatten()
        fg_deltas = deltas.view(deltas.shape[0], -1, 4)[fg, labels[fg]]
        box_loss = F.smooth_l1_loss(fg_deltas, box_targets[fg], beta=self.smooth_l1_beta, reduction="sum")
        return {
            "loss_cls": F.cross_entropy(logits, labels),
            "loss_box": box_loss / max(labels.numel(), 1),
        }

    @torch.no_grad()
    def inference(
        self, logits: Tensor, deltas: Tensor, boxes: Sequence[Tensor], image_sizes: Sequence[tuple[int, int]]
    ) -> list[Instances]:
        scores = F.softmax(logits, -1)[:, : self.num_classes]
        pred = self.box_coder.decode(deltas, torch.cat(boxes))
        results = []
        counts = [x.shape[0] for x in boxes]  # not len(): a traced size stays in the graph (ONNX export)
        for s, b, size in zip(scores.split(counts), pred.split(counts), image_sizes):
            labels = torch.arange(self.num_classes, device=s.device).repeat(s.shape[0])
            b, s, labels = select_boxes(
                b.reshape(-1, 4), s.reshape(-1), labels, image_size=size, min_size=self.min_size,
                nms_thresh=self.nms_thresh, max_count=self.detections_per_image, score_thresh=self.score_thresh,
            )
            results.append(Instances(boxes=b, labels=labels, scores=s))
        return results
