"""Detectron (Caffe2, 2017-2018) checkpoints -> detzoo checkpoints.

Covers the rows of Detectron's model zoo (``configs/12_2017_baselines``): RPN, Fast R-CNN,
Faster, Mask and Keypoint R-CNN on R-50-C4 and on R-50 / R-101 / X-101-64x4d / X-101-32x8d
with FPN, and RetinaNet. Its ``model_final.pkl`` files are Python 2 pickles of
``{"blobs": {name: ndarray}, "cfg": yaml text}``, read by ``detzoo.engine.checkpoint.load_checkpoint``
through its restricted unpickler (``encoding="latin1"``).

The blobs are renamed to detectron2's names and moved to detectron2's layout (the mapping
of detectron2's ``c2_model_loading``, with full module paths, extended to RetinaNet), then
converted by ``detzoo.zoo.converters.detectron2.convert_state_dict``. On the way:

* ``*_momentum`` blobs (SGD state) are dropped, so are ``pred_w`` / ``pred_b`` (the
  ImageNet classifier, which Detectron keeps in its files with every blob of the
  initialisation its model does not use: also ``res5_*`` in an RPN on R-50-C4) and
  ``kps_score_w`` / ``_b``, the fixed bilinear x2 upsampling of keypoint heatmaps (checked
  to be that), which detzoo's keypoint head does with ``F.interpolate``;
* affine-channel norms (``*_bn_s``, ``*_bn_b``: y = s x + b) become frozen BN with running
  mean 0 and running variance 1 - eps (eps of detzoo's frozen BN): the same affine map;
* background is class 0 in Detectron: its logit moves last, its box deltas (first 4 rows)
  and mask logits (first channel) are dropped, as detectron2's loader does;
* the 15 anchors of the C4 RPN are ratio-major in Detectron (``generate_anchors``), as in
  detzoo, and RetinaNet's octave-major, as in detectron2; both arrive in detzoo's order;
* C4 Mask R-CNN shares res5 between the box and mask heads (``v0upshare``: at test time
  Detectron loads its ``_[mask]_res5_*`` from the ``res5_*`` blobs), as detzoo does.

Conventions recorded as config overrides in the meta, applied by ``load_model``:

* pixels: BGR minus Detectron's mean [102.9801, 115.9465, 122.7717], no std;
* backbone style: caffe (stride in the first 1x1 conv) for MSRA's R-50 / R-101, pytorch
  for the ResNeXts (their configs' ``STRIDE_1X1: False``), told apart by grouped convs;
* RoIAlign without the half-pixel offset (``aligned=False``) in the box, mask and keypoint
  branches, 2 x 2 samples per bin with FPN (``ROI_XFORM_SAMPLING_RATIO: 2``; C4: adaptive);
* anchors centred on half a stride (``offset=0.5``): Detectron's anchor at a location is
  centred on (stride - 1) / 2 in its inclusive pixel coordinates, stride / 2 in detzoo's;
* smooth L1 losses (training only): beta 1/9 in the RPN, 1 in the box head, 0.11 in RetinaNet.

Not reproduced (detzoo has no such option), each a difference of about a pixel or less at
the input scale:

* the "+1" box convention: Detectron's inclusive box [x1, x2] (width x2 - x1 + 1) is
  detzoo's [x1, x2 + 1]; decoding, IoU and clipping agree under that correspondence, but
  Detectron's RoIAlign pools [x1, x2], one pixel less than detzoo's, and its FPN level
  assignment uses the +1 area;
* anchor sizes: Detectron rounds each aspect ratio's width and height at the stride scale
  before scaling (size 32, ratio 0.5: 48 x 24 where detzoo has 45.3 x 22.6; ratio 1 agrees);
* the resize (OpenCV on the mean-subtracted float image) and the border of upsampled
  keypoint heatmaps (Detectron's bilinear deconvolution sees zeros past the edge).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from detzoo.layers.norm import FrozenBatchNorm2d
from detzoo.zoo.converters.detectron2 import (
    NUM_ASPECT_RATIOS,
    Rule,
    class_overrides,
    convert_state_dict,
    detzoo_checkpoint,
    grouped,
    rename,
    rename_keys,
    to_tensors,
    transpose_anchors,
)


PIXELS: dict[str, object] = {
    "model.input_format": "BGR",
    "model.pixel_scale": 1.0,
    "model.pixel_mean": [102.9801, 115.9465, 122.7717],
    "model.pixel_std": [1.0, 1.0, 1.0],
}
# blob name suffix -> detectron2 parameter (affine-channel norms first: "_bn_b" ends with "_b")
PARAMS = {"_bn_s": "norm.weight", "_bn_b": "norm.bias", "_w": "weight", "_b": "bias"}
BRANCHES = {"2a": "conv1", "2b": "conv2", "2c": "conv3", "1": "shortcut"}
RPN_OUTPUTS = ("proposal_generator.rpn_head.objectness_logits.", "proposal_generator.rpn_head.anchor_deltas.")
FROZEN_BN_EPS = FrozenBatchNorm2d(1).eps
# Detectron's KRCNN.UP_SCALE 2: a 4x4 transposed conv holding this bilinear filter per channel
BILINEAR_X2 = torch.tensor([0.25, 0.75, 0.75, 0.25])


def _module_rules(body: str, res5: str) -> list[Rule]:
    """Detectron blob names without their parameter suffix -> detectron2 module paths.
    ``body``: where res2-res4 live (FPN: ``backbone.bottom_up.``, C4: ``backbone.``),
    ``res5``: where res5 lives (C4: ``roi_heads.``, its box head)."""
    return [
        (r"^(?:res_)?conv1$", f"{body}stem.conv1"),  # conv1_w and its norm res_conv1_bn_{s,b}
        (
            r"^res(\d)_(\d+)_branch(2[abc]|1)$",
            lambda m: f"{res5 if m[1] == '5' else body}res{m[1]}.{m[2]}.{BRANCHES[m[3]]}",
        ),
        (r"^fpn_inner_res(\d)_\d+_sum(?:_lateral)?$", r"backbone.fpn_lateral\1"),
        (r"^fpn_res(\d)_\d+_sum$", r"backbone.fpn_output\1"),
        (r"^fpn_([67])$", r"backbone.top_block.p\1"),
        # FPN: the RPN head's convs are created on the finest level (fpn2) and shared
        (r"^conv_rpn(?:_fpn\d+)?$", "proposal_generator.rpn_head.conv"),
        (r"^rpn_cls_logits(?:_fpn\d+)?$", "proposal_generator.rpn_head.objectness_logits"),
        (r"^rpn_bbox_pred(?:_fpn\d+)?$", "proposal_generator.rpn_head.anchor_deltas"),
        (r"^fc([67])$", lambda m: f"roi_heads.box_head.fc{int(m[1]) - 5}"),
        (r"^(cls_score|bbox_pred)$", r"roi_heads.box_predictor.\1"),
        (r"^_\[mask\]_fcn(\d+)$", r"roi_heads.mask_head.mask_fcn\1"),
        (r"^conv5_mask$", "roi_heads.mask_head.deconv"),
        (r"^mask_fcn_logits$", "roi_heads.mask_head.predictor"),
        (r"^conv_fcn(\d+)$", r"roi_heads.keypoint_head.conv_fcn\1"),
        (r"^kps_score_lowres$", "roi_heads.keypoint_head.score_lowres"),
        # RetinaNet: towers created on the finest level (fpn3) and shared
        (r"^retnet_cls_conv_n(\d+)_fpn\d+$", lambda m: f"head.cls_subnet.{2 * int(m[1])}"),
        (r"^retnet_bbox_conv_n(\d+)_fpn\d+$", lambda m: f"head.bbox_subnet.{2 * int(m[1])}"),
        (r"^retnet_cls_pred_fpn\d+$", "head.cls_score"),
        (r"^retnet_bbox_pred_fpn\d+$", "head.bbox_pred"),
    ]


def _check_bilinear(blobs: Mapping[str, Tensor]) -> None:
    """``kps_score_w`` / ``_b`` must be Detectron's fixed bilinear x2 upsampling."""
    weight, bias = blobs["kps_score_w"], blobs.get("kps_score_b")
    expected = torch.eye(weight.shape[0])[:, :, None, None] * torch.outer(BILINEAR_X2, BILINEAR_X2)
    fixed = weight.shape == expected.shape and torch.allclose(weight.float(), expected)
    if not fixed or (bias is not None and bias.any()):
        raise ValueError(
            "Detectron blob kps_score_w is not the fixed bilinear x2 upsampling (KRCNN.UP_SCALE 2) that "
            "detzoo's keypoint head does with F.interpolate"
        )


def _fpn(blobs: Mapping[str, Tensor]) -> bool:
    return any(k.startswith("fpn_") for k in blobs)


def _dropped(blobs: Mapping[str, Tensor]) -> set[str]:
    """Blobs that are no weights of the model: SGD momentum, the ImageNet classifier and
    res5 of an R-50-C4 RPN (kept from the initialisation), the fixed keypoint upsampling."""
    names = {k for k in blobs if k.endswith("_momentum")} | {"pred_w", "pred_b"}
    if "kps_score_w" in blobs:
        _check_bilinear(blobs)
        names |= {"kps_score_w", "kps_score_b"}
    if not _fpn(blobs) and "cls_score_w" not in blobs:
        names |= {k for k in blobs if k.startswith("res5_")}
    return names


def _detectron2_name(blob: str, rules: list[Rule]) -> str | None:
    suffix = next((s for s in PARAMS if blob.endswith(s)), None)
    module = None if suffix is None else rename(blob[: -len(suffix)], rules)
    return None if module is None else f"{module}.{PARAMS[suffix]}"


def to_detectron2(blobs: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A Detectron blob dict as the state dict detectron2 holds for the same model: names,
    frozen-BN statistics, background class last and without box deltas or mask logits,
    RPN anchors size-major."""
    blobs = {k: v for k, v in blobs.items() if k not in _dropped(blobs)}
    fpn = _fpn(blobs)
    rules = _module_rules("backbone.bottom_up." if fpn else "backbone.", "backbone.bottom_up." if fpn else "roi_heads.")
    state = rename_keys(blobs, lambda k: _detectron2_name(k, rules), "Detectron")
    out = {}
    for key, value in state.items():
        if key.startswith("roi_heads.box_predictor.cls_score."):
            value = torch.cat([value[1:], value[:1]])
        elif key.startswith("roi_heads.box_predictor.bbox_pred."):
            value = value[4:]
        elif key.startswith("roi_heads.mask_head.predictor."):
            value = value[1:]
        elif key.startswith(RPN_OUTPUTS):
            num_anchors = state["proposal_generator.rpn_head.anchor_deltas.weight"].shape[0] // 4
            value = transpose_anchors(value, num_anchors, NUM_ASPECT_RATIOS)
        out[key] = value
        if key.endswith(".norm.weight"):  # an affine channel's scale
            norm = key.removesuffix("weight")
            out[norm + "running_mean"] = torch.zeros_like(value)
            out[norm + "running_var"] = torch.full_like(value, 1.0 - FROZEN_BN_EPS)
    return out


def convert(checkpoint: Mapping[str, Any]) -> dict:
    """A detzoo checkpoint (``model`` + ``meta``) from a loaded Detectron checkpoint
    (``{"blobs": ..., "cfg": ...}``, or the bare blob dict of its older files)."""
    blobs = to_tensors(checkpoint.get("blobs", checkpoint), "Detectron")
    state = to_detectron2(blobs)
    model = convert_state_dict(state)
    overrides = {**PIXELS, "model.backbone.style": "pytorch" if grouped(state) else "caffe"}
    classes, num_classes = class_overrides(model, "Detectron")
    overrides.update(classes)
    if "dense_head.head.deltas.weight" in model:
        overrides["model.dense_head.anchor_generator.offset"] = 0.5
        overrides["model.dense_head.smooth_l1_beta"] = 0.11 if "dense_head.head.cls_logits.weight" in model else 1.0 / 9
    if "roi_heads.predictor.cls_score.weight" in model:
        overrides["model.roi_heads.smooth_l1_beta"] = 1.0
        for section in ("roi_heads", "roi_heads.mask", "roi_heads.keypoint"):
            if any(k.startswith(f"{section}.") for k in model):
                overrides[f"model.{section}.pooler.aligned"] = False
                if _fpn(blobs):
                    overrides[f"model.{section}.pooler.sampling_ratio"] = 2
    return detzoo_checkpoint(model, "Detectron", overrides, num_classes)
