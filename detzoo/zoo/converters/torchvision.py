"""torchvision detection checkpoints -> detzoo checkpoints.

Covers ``fasterrcnn_resnet50_fpn``, ``maskrcnn_resnet50_fpn`` and
``keypointrcnn_resnet50_fpn``. torchvision differs from detzoo's defaults (those of
detectron2 / mmdetection) in parameter names, in putting background at class index 0 and
predicting deltas for it, and in a few conventions. The converter renames and reorders
the weights and records the conventions as config overrides in the checkpoint's meta,
which ``detzoo.api.load_model`` applies on top of any config it is given.
"""

from __future__ import annotations

import re
from typing import Callable, Mapping

import torch
from torch import Tensor

# (torchvision name pattern, detzoo name); the first matching pattern wins.
RENAMES: list[tuple[str, str | Callable[[re.Match], str]]] = [
    (r"^backbone\.body\.", "backbone."),
    (r"^backbone\.fpn\.inner_blocks\.(\d+)\.0\.", r"neck.lateral_convs.\1.0."),
    (r"^backbone\.fpn\.layer_blocks\.(\d+)\.0\.", r"neck.output_convs.\1.0."),
    (r"^rpn\.head\.conv\.0\.0\.", "rpn.head.conv."),
    (r"^rpn\.head\.cls_logits\.", "rpn.head.objectness."),
    (r"^rpn\.head\.bbox_pred\.", "rpn.head.deltas."),
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

# Where torchvision's Faster R-CNN differs from configs/_base_/models/faster_rcnn_r50_fpn.py.
CONVENTIONS: dict[str, object] = {
    "model.rpn.anchor_generator.round_base": True,
    "model.rpn.anchor_generator.strides_from_grid": True,
    "model.rpn.min_size": 1e-3,
    "model.rpn.post_nms_topk_train": 2000,
    "model.rpn.smooth_l1_beta": 1.0 / 9,
    "model.roi_heads.pooler.aligned": False,
    "model.roi_heads.pooler.sampling_ratio": 2,
    "model.roi_heads.min_size": 1e-2,
    "model.roi_heads.smooth_l1_beta": 1.0 / 9,
    "model.input_format": "RGB",
    "model.pixel_scale": 255.0,
    "model.pixel_mean": [0.485, 0.456, 0.406],
    "model.pixel_std": [0.229, 0.224, 0.225],
}
BRANCH_CONVENTIONS: dict[str, object] = {
    "pooler.aligned": False,
    "pooler.sampling_ratio": 2,
}


def rename(key: str) -> str:
    for pattern, replacement in RENAMES:
        new, n = re.subn(pattern, replacement, key)
        if n:
            return new
    raise ValueError(f"torchvision checkpoint key {key!r} has no detzoo counterpart")


def convert_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename keys, move the background logit last, drop the background deltas and
    mask logits."""
    out = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        new = rename(key)
        if new.startswith("roi_heads.predictor.cls_score."):
            value = torch.cat([value[1:], value[:1]])
        else:
            rows = next((n for prefix, n in BACKGROUND_ROWS.items() if new.startswith(prefix)), 0)
            value = value[rows:]
        out[new] = value
    return out


def coco_categories() -> tuple[list[str], list[int]]:
    """torchvision's 91-entry COCO list without background: names and category ids 1..90
    ("N/A" marks ids COCO never used)."""
    from torchvision.models._meta import _COCO_CATEGORIES

    names = list(_COCO_CATEGORIES[1:])
    return names, list(range(1, len(names) + 1))


def convert(state: Mapping[str, Tensor]) -> dict:
    """A detzoo checkpoint (``model`` + ``meta``) from a torchvision Faster R-CNN state dict."""
    if "roi_heads.box_predictor.cls_score.weight" not in state:
        raise ValueError("not a torchvision Faster/Mask/Keypoint R-CNN state dict: no roi_heads.box_predictor.cls_score.weight")
    num_classes = state["roi_heads.box_predictor.cls_score.weight"].shape[0] - 1
    names, cat_ids = coco_categories()
    if num_classes == 1:  # Keypoint R-CNN: person only
        names, cat_ids = names[:1], cat_ids[:1]
    elif num_classes != len(names):
        names = [f"class_{i}" for i in range(num_classes)]
        cat_ids = list(range(1, num_classes + 1))
    overrides = {**CONVENTIONS, "model.roi_heads.num_classes": num_classes}
    for branch in ("mask", "keypoint"):
        if any(k.startswith(f"roi_heads.{branch}_predictor.") for k in state):
            overrides.update({f"model.roi_heads.{branch}.{k}": v for k, v in BRANCH_CONVENTIONS.items()})
    return {
        "model": convert_state_dict(state),
        "meta": {"source": "torchvision", "config_overrides": overrides, "class_names": names, "cat_ids": cat_ids},
    }
