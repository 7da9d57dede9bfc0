"""torchvision detection checkpoints -> detzoo checkpoints.

Covers ``fasterrcnn_resnet50_fpn``, ``maskrcnn_resnet50_fpn``,
``keypointrcnn_resnet50_fpn`` and ``retinanet_resnet50_fpn``. torchvision differs from detzoo's defaults (those of
detectron2 / mmdetection) in parameter names, in putting background at class index 0 and
predicting deltas for it, and in a few conventions. The converter renames and reorders
the weights and records the conventions as config overrides in the checkpoint's meta,
which ``detzoo.api.load_model`` applies on top of any config it is given.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from detzoo.zoo.converters.rules import Rule, rename, rename_keys

# (torchvision name pattern, detzoo name); the first matching pattern wins.
RENAMES: list[Rule] = [
    (r"^backbone\.body\.", "backbone."),
    (r"^backbone\.fpn\.inner_blocks\.(\d+)\.0\.", r"neck.lateral_convs.\1.0."),
    (r"^backbone\.fpn\.layer_blocks\.(\d+)\.0\.", r"neck.output_convs.\1.0."),
    (r"^backbone\.fpn\.extra_blocks\.(p6|p7)\.", r"neck.top_block.\1.0."),
    (r"^head\.classification_head\.conv\.(\d+)\.0\.", r"dense_head.head.cls_convs.\1.0."),
    (r"^head\.classification_head\.cls_logits\.", "dense_head.head.cls_logits."),
    (r"^head\.regression_head\.conv\.(\d+)\.0\.", r"dense_head.head.box_convs.\1.0."),
    (r"^head\.regression_head\.bbox_reg\.", "dense_head.head.deltas."),
    (r"^rpn\.head\.conv\.0\.0\.", "dense_head.head.conv."),
    (r"^rpn\.head\.cls_logits\.", "dense_head.head.objectness."),
    (r"^rpn\.head\.bbox_pred\.", "dense_head.head.deltas."),
    (r"^roi_heads\.box_head\.fc6\.", "roi_heads.box_head.fcs.0."),
    (r"^roi_heads\.box_head\.fc7\.", "roi_heads.box_head.fcs.1."),
    (r"^roi_heads\.box_predictor\.", "roi_heads.predictor."),
    (r"^roi_heads\.mask_head\.(\d+)\.0\.", r"roi_heads.mask.head.convs.\1.0."),
    (r"^roi_heads\.mask_predictor\.conv5_mask\.", "roi_heads.mask.head.deconv."),
    (r"^roi_heads\.mask_predictor\.mask_fcn_logits\.", "roi_heads.mask.head.predictor."),
    # torchvision's keypoint head is a Sequential of conv, ReLU, conv, ...
    (r"^roi_heads\.keypoint_head\.(\d+)\.", lambda m: f"roi_heads.keypoint.head.convs.{int(m[1]) // 2}.0."),
    (r"^roi_heads\.keypoint_predictor\.kps_score_lowres\.", "roi_heads.keypoint.head.deconv."),
]
# Per-class layers whose first rows belong to torchvision's background, dropped (the
# class logits instead move that row last).
BACKGROUND_ROWS = {
    "roi_heads.predictor.bbox_pred.": 4,
    "roi_heads.mask.head.predictor.": 1,
}

PIXELS: dict[str, object] = {
    "model.input_format": "RGB",
    "model.pixel_scale": 255.0,
    "model.pixel_mean": [0.485, 0.456, 0.406],
    "model.pixel_std": [0.229, 0.224, 0.225],
}
# Where torchvision's Faster R-CNN differs from detzoo/configs/_base_/models/faster_rcnn_r50_fpn.py.
CONVENTIONS: dict[str, object] = {
    **PIXELS,
    "model.dense_head.anchor_generator.round_base": True,
    "model.dense_head.anchor_generator.strides_from_grid": True,
    "model.dense_head.min_size": 1e-3,
    "model.dense_head.post_nms_topk_train": 2000,
    "model.dense_head.smooth_l1_beta": 1.0 / 9,
    "model.roi_heads.pooler.aligned": False,
    "model.roi_heads.pooler.sampling_ratio": 2,
    "model.roi_heads.min_size": 1e-2,
    "model.roi_heads.smooth_l1_beta": 1.0 / 9,
}
# Where torchvision's RetinaNet differs from detzoo/configs/_base_/models/retinanet_r50_fpn.py:
# P6 from P5, integer anchor sizes int(s * 2 ** (i / 3)), rounded and grid-derived anchors,
# 300 detections per image.
RETINANET_CONVENTIONS: dict[str, object] = {
    **PIXELS,
    "model.dense_head.detections_per_image": 300,
    "model.neck.top_block.in_feature": "p5",
    "model.dense_head.anchor_generator.sizes": [
        [s, int(s * 2 ** (1 / 3)), int(s * 2 ** (2 / 3))] for s in (32, 64, 128, 256, 512)
    ],
    "model.dense_head.anchor_generator.round_base": True,
    "model.dense_head.anchor_generator.strides_from_grid": True,
}
BRANCH_CONVENTIONS: dict[str, object] = {
    "pooler.aligned": False,
    "pooler.sampling_ratio": 2,
}


def convert_state_dict(state: Mapping[str, Tensor], num_anchors: int = 9) -> dict[str, Tensor]:
    """Rename keys, move the background logit last, drop the background deltas and
    mask logits, and RetinaNet's never-trained background channel of each of its
    ``num_anchors`` anchors."""
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    out = {}
    for new, value in rename_keys(state, lambda k: rename(k, RENAMES), "torchvision").items():
        if new.startswith("roi_heads.predictor.cls_score."):
            value = torch.cat([value[1:], value[:1]])
        elif new.startswith("dense_head.head.cls_logits."):
            value = value.reshape(num_anchors, -1, *value.shape[1:])[:, 1:].flatten(0, 1)
        else:
            rows = next((n for prefix, n in BACKGROUND_ROWS.items() if new.startswith(prefix)), 0)
            value = value[rows:]
        out[new] = value
    return out


def coco_categories(num_classes: int) -> tuple[list[str], list[int]]:
    """Names and category ids of ``num_classes`` classes: torchvision's 90-entry COCO list
    without background (ids 1..90, "N/A" marks ids COCO never used), its first entry
    (person) for one class, generic names otherwise."""
    from torchvision.models._meta import _COCO_CATEGORIES

    names = list(_COCO_CATEGORIES[1:])
    if num_classes == 1:  # Keypoint R-CNN: person only
        names = names[:1]
    elif num_classes != len(names):
        names = [f"class_{i}" for i in range(num_classes)]
    return names, list(range(1, num_classes + 1))


def convert(state: Mapping[str, Tensor]) -> dict:
    """A detzoo checkpoint (``model`` + ``meta``) from a torchvision Faster / Mask /
    Keypoint R-CNN or RetinaNet state dict."""
    num_anchors = 9
    if "head.classification_head.cls_logits.weight" in state:
        num_anchors = state["head.regression_head.bbox_reg.weight"].shape[0] // 4
        num_classes = state["head.classification_head.cls_logits.weight"].shape[0] // num_anchors - 1
        overrides = {**RETINANET_CONVENTIONS, "model.dense_head.num_classes": num_classes}
    elif "roi_heads.box_predictor.cls_score.weight" in state:
        num_classes = state["roi_heads.box_predictor.cls_score.weight"].shape[0] - 1
        overrides = {**CONVENTIONS, "model.roi_heads.num_classes": num_classes}
        for branch in ("mask", "keypoint"):
            if any(k.startswith(f"roi_heads.{branch}_predictor.") for k in state):
                overrides.update({f"model.roi_heads.{branch}.{k}": v for k, v in BRANCH_CONVENTIONS.items()})
    else:
        raise ValueError(
            "not a torchvision Faster/Mask/Keypoint R-CNN or RetinaNet state dict: no "
            "roi_heads.box_predictor.cls_score.weight or head.classification_head.cls_logits.weight"
        )
    names, cat_ids = coco_categories(num_classes)
    return {
        "model": convert_state_dict(state, num_anchors),
        "meta": {"source": "torchvision", "config_overrides": overrides, "class_names": names, "cat_ids": cat_ids},
    }
