"""mmdetection 2.x / 3.x checkpoints -> detzoo checkpoints.

Covers Faster / Mask R-CNN and RetinaNet on ResNet / ResNeXt with FPN (BN, GN, GN+WS),
NAS-FPN and FPG necks. The keys are renamed by explicit rules; a key that no rule
matches is an error that lists it (nothing is guessed). mmdetection already puts the
background class last and predicts no background deltas, as detzoo does. Its other
conventions are recorded as config overrides in the converted checkpoint's meta, which
``detzoo.api.load_model`` applies on top of the config it is given:

* its pixel pipeline: the uint8 image resized with OpenCV and mmcv's size rounding, then
  normalised (``data.resize="mmdet"``);
* boxes of zero width or height dropped before NMS in the RPN and RetinaNet
  (``min_bbox_size=0`` with a strict ``>``): ``min_size`` of 1e-6;
* box decoding clamps dw / dh from below too (``clamp_shrink``);
* masks are pasted by sampling each pixel centre (``mask_paste="grid_sample"``);
* RetinaNet's FPN applies no ReLU before P7 unless its config says
  ``relu_before_extra_convs=True`` (read from the config text the checkpoint carries).

Class names come from the checkpoint's meta (mmdetection 3: ``dataset_meta.classes``; 2:
``CLASSES``); COCO's names get COCO's category ids.
"""

from __future__ import annotations

import ast
import re
from typing import Any, Mapping

from torch import Tensor

from detzoo.zoo.converters.rules import Rule, rename, rename_keys

NORM = r"(?:bn|gn)"
BACKBONE: list[Rule] = [
    (rf"^backbone\.{NORM}1\.", "backbone.bn1."),
    (rf"^backbone\.(layer\d+\.\d+)\.{NORM}(\d)\.", r"backbone.\1.bn\2."),
    (r"^backbone\.", "backbone."),
]
# FPN: laterals and output convs are ConvModules (conv + optional norm); output convs past
# the laterals are RetinaNet's P6 / P7 convs
FPN: list[Rule] = [
    (r"^neck\.lateral_convs\.(\d+)\.conv\.", r"neck.lateral_convs.\1.0."),
    (rf"^neck\.lateral_convs\.(\d+)\.{NORM}\.", r"neck.lateral_convs.\1.1."),
    (r"^neck\.fpn_convs\.(\d+)\.conv\.", r"neck.output_convs.\1.0."),
    (rf"^neck\.fpn_convs\.(\d+)\.{NORM}\.", r"neck.output_convs.\1.1."),
]
NAS_FPN: list[Rule] = [
    (r"^neck\.lateral_convs\.(\d+)\.conv\.", r"neck.lateral_convs.\1.0."),
    (r"^neck\.lateral_convs\.(\d+)\.bn\.", r"neck.lateral_convs.\1.1."),
    (r"^neck\.extra_downsamples\.(\d+)\.0\.conv\.", r"neck.extra_convs.\1.0."),
    (r"^neck\.extra_downsamples\.(\d+)\.0\.bn\.", r"neck.extra_convs.\1.1."),
    (r"^neck\.fpn_stages\.(\d+)\.(\w+)\.out_conv\.conv\.", r"neck.stages.\1.\2.out_conv.0."),
    (r"^neck\.fpn_stages\.(\d+)\.(\w+)\.out_conv\.bn\.", r"neck.stages.\1.\2.out_conv.1."),
]
FPG: list[Rule] = [
    (r"^neck\.lateral_convs\.(\d+)\.", r"neck.lateral_convs.\1.0."),
    (r"^neck\.extra_downsamples\.(\d+)\.", r"neck.extra_downsamples.\1.0."),
    (r"^neck\.fpn_transitions\.(\d+)\.(\d+)\.(same_up|across_lateral|across_skip)\.conv\.", r"neck.stages.\1.\2.\3.0."),
    (r"^neck\.fpn_transitions\.(\d+)\.(\d+)\.(same_up|across_lateral|across_skip)\.bn\.", r"neck.stages.\1.\2.\3.1."),
    (r"^neck\.fpn_transitions\.(\d+)\.(\d+)\.across_down\.conv\.conv\.", r"neck.stages.\1.\2.across_down.0."),
    (r"^neck\.fpn_transitions\.(\d+)\.(\d+)\.across_down\.conv\.bn\.", r"neck.stages.\1.\2.across_down.1."),
    (r"^neck\.output_transition\.(\d+)\.conv_out\.conv\.", r"neck.output_convs.\1.0."),
]
RPN: list[Rule] = [
    (r"^rpn_head\.rpn_conv\.", "dense_head.head.conv."),
    (r"^rpn_head\.rpn_cls\.", "dense_head.head.objectness."),
    (r"^rpn_head\.rpn_reg\.", "dense_head.head.deltas."),
]
ROI_HEADS: list[Rule] = [
    (r"^roi_head\.bbox_head\.shared_fcs\.(\d+)\.", r"roi_heads.box_head.fcs.\1."),
    (r"^roi_head\.bbox_head\.shared_convs\.(\d+)\.conv\.", r"roi_heads.box_head.convs.\1.0."),
    (rf"^roi_head\.bbox_head\.shared_convs\.(\d+)\.{NORM}\.", r"roi_heads.box_head.convs.\1.1."),
    (r"^roi_head\.bbox_head\.fc_cls\.", "roi_heads.predictor.cls_score."),
    (r"^roi_head\.bbox_head\.fc_reg\.", "roi_heads.predictor.bbox_pred."),
    (r"^roi_head\.mask_head\.convs\.(\d+)\.conv\.", r"roi_heads.mask.head.convs.\1.0."),
    (rf"^roi_head\.mask_head\.convs\.(\d+)\.{NORM}\.", r"roi_heads.mask.head.convs.\1.1."),
    (r"^roi_head\.mask_head\.upsample\.", "roi_heads.mask.head.deconv."),
    (r"^roi_head\.mask_head\.conv_logits\.", "roi_heads.mask.head.predictor."),
]
# RetinaHead: one conv tower per branch; RetinaSepBNHead: ``cls_convs.<level>.<i>``, the
# convs shared across levels (the same tensor under every level), a norm per level
RETINA: list[Rule] = [
    (r"^bbox_head\.cls_convs\.(\d+)\.conv\.", r"dense_head.head.cls_convs.\1.0."),
    (r"^bbox_head\.reg_convs\.(\d+)\.conv\.", r"dense_head.head.box_convs.\1.0."),
    (r"^bbox_head\.cls_convs\.(\d+)\.(\d+)\.conv\.", r"dense_head.head.cls_convs.\2.0."),
    (r"^bbox_head\.reg_convs\.(\d+)\.(\d+)\.conv\.", r"dense_head.head.box_convs.\2.0."),
    (rf"^bbox_head\.cls_convs\.(\d+)\.(\d+)\.{NORM}\.", r"dense_head.head.cls_norms.\1.\2."),
    (rf"^bbox_head\.reg_convs\.(\d+)\.(\d+)\.{NORM}\.", r"dense_head.head.box_norms.\1.\2."),
    (r"^bbox_head\.retina_cls\.", "dense_head.head.cls_logits."),
    (r"^bbox_head\.retina_reg\.", "dense_head.head.deltas."),
]
NECKS = {"nas_fpn": NAS_FPN, "fpg": FPG, "fpn": FPN}
ZERO_SIZE = 1e-6  # mmdetection drops boxes of zero width or height (w > 0), detzoo w >= min_size


def _neck_kind(state: Mapping[str, Tensor]) -> str:
    if any(k.startswith("neck.fpn_stages.") for k in state):
        return "nas_fpn"
    if any(k.startswith("neck.fpn_transitions.") for k in state):
        return "fpg"
    return "fpn"


def _fpn_extra_convs(state: Mapping[str, Tensor]) -> list[Rule]:
    """RetinaNet's FPN keeps P6 / P7 in ``fpn_convs`` after the laterals' output convs."""
    num_laterals = len({k.split(".")[2] for k in state if k.startswith("neck.lateral_convs.")})
    rules: list[Rule] = []
    for i, name in ((num_laterals, "p6"), (num_laterals + 1, "p7")):
        rules.append((rf"^neck\.fpn_convs\.{i}\.conv\.", f"neck.top_block.{name}.0."))
        rules.append((rf"^neck\.fpn_convs\.{i}\.{NORM}\.", f"neck.top_block.{name}.1."))
    return rules


def rename_all(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Every key of an mmdetection state dict renamed; an error lists the keys that no
    rule matches. A conv that RetinaSepBNHead shares across levels appears once per level
    in the state dict: the copies must be equal and are kept once."""
    rules = BACKBONE + _fpn_extra_convs(state) + NECKS[_neck_kind(state)] + RPN + ROI_HEADS + RETINA
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    return rename_keys(state, lambda k: rename(k, rules), "mmdetection", shared=True)


def _config_text(meta: Mapping[str, Any]) -> str:
    """The config an mmdetection checkpoint carries (3.x: ``cfg``, 2.x: ``config``)."""
    text = meta.get("cfg", meta.get("config", ""))
    return text if isinstance(text, str) else ""


def _config_flag(text: str, name: str, default: bool) -> bool:
    """The literal value of ``name=...`` in a config text (parsed, never executed)."""
    match = re.search(rf"\b{name}\s*=\s*(True|False)\b", text)
    return default if match is None else ast.literal_eval(match.group(1))


def class_list(meta: Mapping[str, Any], num_classes: int) -> tuple[list[str], list[int]]:
    """Class names from the meta (else generic) and their COCO ids when they are COCO's."""
    from torchvision.models._meta import _COCO_CATEGORIES

    names = (meta.get("dataset_meta") or {}).get("classes") or meta.get("CLASSES")
    names = (list(names) if names is not None and len(names) == num_classes
             else [f"class_{i}" for i in range(num_classes)])
    if all(n in _COCO_CATEGORIES for n in names):
        return names, [_COCO_CATEGORIES.index(n) for n in names]
    return names, list(range(1, num_classes + 1))


def convert(checkpoint: Mapping[str, Any]) -> dict:
    """A detzoo checkpoint (``model`` + ``meta``) from a loaded mmdetection checkpoint
    (``{"state_dict": ..., "meta": ...}``, or a bare state dict)."""
    state = checkpoint.get("state_dict", checkpoint)
    meta = checkpoint.get("meta") or {}
    model = rename_all(state)
    overrides: dict[str, object] = {
        "data.resize": "mmdet",
        "model.dense_head.min_size": ZERO_SIZE,
        "model.dense_head.clamp_shrink": True,
        "model.mask_paste": "grid_sample",
    }
    if "roi_heads.predictor.cls_score.weight" in model:
        num_classes = model["roi_heads.predictor.cls_score.weight"].shape[0] - 1
        overrides["model.roi_heads.num_classes"] = num_classes
        overrides["model.roi_heads.clamp_shrink"] = True
    elif "dense_head.head.cls_logits.weight" in model:
        num_anchors = model["dense_head.head.deltas.weight"].shape[0] // 4
        num_classes = model["dense_head.head.cls_logits.weight"].shape[0] // num_anchors
        overrides["model.dense_head.num_classes"] = num_classes
        if "neck.top_block.p7.0.weight" in model:
            overrides["model.neck.top_block.relu_before_p7"] = _config_flag(
                _config_text(meta), "relu_before_extra_convs", False
            )
    else:
        raise ValueError("not an mmdetection Faster/Mask R-CNN or RetinaNet checkpoint: no fc_cls or retina_cls")
    names, cat_ids = class_list(meta, num_classes)
    return {
        "model": model,
        "meta": {"source": "mmdet", "config_overrides": overrides, "class_names": names, "cat_ids": cat_ids},
    }
