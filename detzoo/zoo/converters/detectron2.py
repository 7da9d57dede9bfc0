"""detectron2 checkpoints -> detzoo checkpoints.

Covers detectron2's Faster / Mask / Keypoint R-CNN (FPN and C4), RPN, Fast R-CNN and
RetinaNet on ResNet / ResNeXt with frozen BN: its model zoo's ``model_final_*.pkl``
files (``{"model": {name: numpy array}, "__author__": ...}``, read by
``detzoo.engine.checkpoint.load_checkpoint`` through its restricted unpickler) and the ``.pth`` files its
trainer writes (``{"model": state_dict, "optimizer": ...}``, read weights-only).

Keys are renamed by explicit rules (``RESNET``, ``_fpn_rules``, ``_head_rules``); a key
that no rule matches is an error that lists it. Where detzoo's modules hold the same
weights in another layout, values move:

* anchors: detectron2 orders the cell anchors of a location size-major (each size, then
  each aspect ratio), detzoo ratio-major (torchvision's and mmdetection's order), so the
  per-anchor channels of the RPN (C4: 5 sizes x 3 ratios) and RetinaNet (3 x 3) output
  convs are reordered. The reordering assumes 3 aspect ratios, as every detectron2 config;
* C4: the mask (or keypoint) branch runs the box head's res5, which detzoo's state dict
  lists under both heads, so ``roi_heads.res5`` fills both;
* background is the last class in both toolboxes and neither predicts background box
  deltas or masks: nothing moves.

What the weights cannot say comes from the ImageNet initialisation the model was trained
from (``INITS``): detectron2's R-50 / R-101 rows start from MSRA's caffe-style weights
(stride in the first 1x1 conv, BGR pixels minus the mean, std 1), its ResNeXt rows from
FAIR's X-101-32x8d (stride in the 3x3, BGR, a per-channel std), and models built on
torchvision's weights take RGB pixels with torchvision's mean and std. ``convert`` takes
"fair" for a grouped (ResNeXt) backbone and "msra" otherwise, unless it is told, or unless
the checkpoint carries ``pixel_mean`` / ``pixel_std`` buffers (saved where detectron2's model
registered them as persistent buffers), which then name the preset and must match it.

detzoo's defaults are detectron2's for anchors (unrounded, offset 0, nominal strides),
RoIAlign (aligned, adaptive sampling), box coding and L1 losses. What else differs is
recorded as config overrides in the checkpoint's meta, which ``detzoo.api.load_model``
applies on top of the config it is given: the backbone style and pixel format of the
initialisation; the RPN dropping proposals of zero width or height (``min_size`` 1e-6,
as ``find_top_rpn_proposals``); masks pasted by sampling each pixel centre
(``mask_paste="grid_sample"``, detectron2's ``paste_masks_in_image``). Not reproduced:
detectron2's ``detector_postprocess`` drops detections left empty by clipping to the
original image after NMS; detzoo keeps them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from detzoo.zoo.converters.mmdet import ZERO_SIZE, class_list
from detzoo.zoo.converters.rules import Rule, rename, rename_keys

CAFFE_MEAN = [103.53, 116.28, 123.675]  # BGR
# ImageNet initialisation -> the backbone style and pixel format of the models trained from it
INITS: dict[str, dict[str, object]] = {
    "msra": {
        "model.backbone.style": "caffe",
        "model.input_format": "BGR",
        "model.pixel_scale": 1.0,
        "model.pixel_mean": CAFFE_MEAN,
        "model.pixel_std": [1.0, 1.0, 1.0],
    },
    "fair": {
        "model.backbone.style": "pytorch",
        "model.input_format": "BGR",
        "model.pixel_scale": 1.0,
        "model.pixel_mean": CAFFE_MEAN,
        "model.pixel_std": [57.375, 57.12, 58.395],
    },
    "torchvision": {
        "model.backbone.style": "pytorch",
        "model.input_format": "RGB",
        "model.pixel_scale": 1.0,
        "model.pixel_mean": CAFFE_MEAN[::-1],
        "model.pixel_std": [58.395, 57.12, 57.375],
    },
}
NUM_ASPECT_RATIOS = 3
# detzoo's dense-head output convs, one group of channels per cell anchor
ANCHOR_OUTPUTS = ("dense_head.head.objectness.", "dense_head.head.deltas.", "dense_head.head.cls_logits.")
# buffers that are not weights: the pixel normalisation (read by ``convert``), cell anchors
# (old checkpoints; recomputed from the config) and BN counters
IGNORED = re.compile(r"^pixel_(mean|std)$|anchor_generator\.cell_anchors\.|num_batches_tracked$")


def _block_param(part: str, rest: str) -> str:
    """A bottleneck's ``conv1``..``conv3`` / ``shortcut`` parameter ``rest`` (its norm's
    under ``norm.``) in detzoo's (torchvision's) names."""
    conv, norm = ("downsample.0", "downsample.1") if part == "shortcut" else (part, f"bn{part[-1]}")
    return f"{norm}.{rest[5:]}" if rest.startswith("norm.") else f"{conv}.{rest}"


def _conv_norm(prefix: str, rest: str) -> str:
    """A detectron2 ``Conv2d`` parameter (its norm's under ``norm.``) in a detzoo conv +
    norm ``Sequential`` at ``prefix``."""
    return f"{prefix}.1.{rest[5:]}" if rest.startswith("norm.") else f"{prefix}.0.{rest}"


BLOCK = r"(conv[1-3]|shortcut)\.(.+)$"
RESNET: list[Rule] = [
    # FPN models nest the ResNet as backbone.bottom_up, C4 models have it as the backbone
    (r"^backbone\.(?:bottom_up\.)?stem\.(conv1)\.(.+)$", lambda m: "backbone." + _block_param(m[1], m[2])),
    (
        rf"^backbone\.(?:bottom_up\.)?res([2-5])\.(\d+)\.{BLOCK}",
        lambda m: f"backbone.layer{int(m[1]) - 1}.{m[2]}." + _block_param(m[3], m[4]),
    ),
    # C4: res5 runs in the RoI heads
    (rf"^roi_heads\.res5\.(\d+)\.{BLOCK}", lambda m: f"roi_heads.box_head.res5.{m[1]}." + _block_param(m[2], m[3])),
]


def _fpn_rules(lowest: int) -> list[Rule]:
    """FPN laterals and outputs are named by the stage they read (``fpn_lateral2`` reads
    res2), detzoo's by position from the lowest one (``lowest``: 2, RetinaNet 3)."""
    return [
        (r"^backbone\.fpn_lateral(\d)\.(.+)$", lambda m: _conv_norm(f"neck.lateral_convs.{int(m[1]) - lowest}", m[2])),
        (r"^backbone\.fpn_output(\d)\.(.+)$", lambda m: _conv_norm(f"neck.output_convs.{int(m[1]) - lowest}", m[2])),
        (r"^backbone\.top_block\.(p6|p7)\.", r"neck.top_block.\1.0."),
    ]


def _head_rules(c4: bool) -> list[Rule]:
    """RPN, RoI heads and RetinaNet head. A C4 model's mask / keypoint head is the second
    module of its branch, after the shared res5."""
    mask, keypoint = (f"roi_heads.{branch}.head{'.1' if c4 else ''}" for branch in ("mask", "keypoint"))
    box_convs = "roi_heads.box_head.convs"
    return [
        (r"^proposal_generator\.rpn_head\.conv\.", "dense_head.head.conv."),
        (r"^proposal_generator\.rpn_head\.objectness_logits\.", "dense_head.head.objectness."),
        (r"^proposal_generator\.rpn_head\.anchor_deltas\.", "dense_head.head.deltas."),
        (r"^roi_heads\.box_head\.fc(\d+)\.", lambda m: f"roi_heads.box_head.fcs.{int(m[1]) - 1}."),
        (r"^roi_heads\.box_head\.conv(\d+)\.(.+)$", lambda m: _conv_norm(f"{box_convs}.{int(m[1]) - 1}", m[2])),
        (r"^roi_heads\.box_predictor\.(cls_score|bbox_pred)\.", r"roi_heads.predictor.\1."),
        (r"^roi_heads\.mask_head\.mask_fcn(\d+)\.(.+)$", lambda m: _conv_norm(f"{mask}.convs.{int(m[1]) - 1}", m[2])),
        (r"^roi_heads\.mask_head\.(deconv|predictor)\.", rf"{mask}.\1."),
        (r"^roi_heads\.keypoint_head\.conv_fcn(\d+)\.", lambda m: f"{keypoint}.convs.{int(m[1]) - 1}.0."),
        (r"^roi_heads\.keypoint_head\.score_lowres\.", f"{keypoint}.deconv."),
        # RetinaNet's towers are Sequentials of conv, ReLU, conv, ...: convs at even indices
        (r"^head\.cls_subnet\.(\d*[02468])\.", lambda m: f"dense_head.head.cls_convs.{int(m[1]) // 2}.0."),
        (r"^head\.bbox_subnet\.(\d*[02468])\.", lambda m: f"dense_head.head.box_convs.{int(m[1]) // 2}.0."),
        (r"^head\.cls_score\.", "dense_head.head.cls_logits."),
        (r"^head\.bbox_pred\.", "dense_head.head.deltas."),
    ]


def to_tensors(state: Mapping[str, Any], toolbox: str) -> dict[str, Tensor]:
    """Numpy arrays (``.pkl`` files) as tensors; an entry that is neither an array of
    numbers nor a tensor is an error naming it."""
    out = {}
    for key, value in state.items():
        if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
            value = torch.from_numpy(np.array(value))
        if not isinstance(value, Tensor):
            raise ValueError(f"{toolbox} checkpoint entry {key!r} is a {type(value).__name__}, not an array of numbers")
        out[key] = value
    return out


def transpose_anchors(t: Tensor, num_anchors: int, outer: int) -> Tensor:
    """The per-anchor channel groups of a dense-head output conv (weight or bias, anchor
    major) reordered from (``outer``, ``num_anchors // outer``) to the transposed order."""
    return t.reshape(outer, num_anchors // outer, -1, *t.shape[1:]).transpose(0, 1).reshape(t.shape)


def grouped(state: Mapping[str, Tensor]) -> bool:
    """Whether a detectron2-named ResNet state dict has grouped 3x3 convs (a ResNeXt)."""
    conv2 = next((v for k, v in state.items() if re.search(r"res2\.0\.conv2\.weight$", k)), None)
    if conv2 is None:
        raise ValueError("not a ResNet checkpoint: it has no res2.0.conv2.weight")
    return conv2.shape[0] != conv2.shape[1]


def rename_all(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Every weight of a detectron2 state dict under its detzoo name (C4: res5 under the
    box head and each branch that runs it); ``IGNORED`` buffers dropped."""
    lowest = min((int(m[1]) for k in state if (m := re.match(r"backbone\.fpn_lateral(\d)\.", k))), default=2)
    c4 = any(k.startswith("roi_heads.res5.") for k in state)
    rules = RESNET + _fpn_rules(lowest) + _head_rules(c4)
    weights = {k: v for k, v in state.items() if not IGNORED.search(k)}
    out = rename_keys(weights, lambda k: rename(k, rules), "detectron2")
    prefix = "roi_heads.box_head.res5."
    res5 = {k.removeprefix(prefix): v for k, v in out.items() if k.startswith(prefix)}
    for branch in ("mask", "keypoint"):
        if any(k.startswith(f"roi_heads.{branch}.head.1.") for k in out):
            out.update({f"roi_heads.{branch}.head.0.{k}": v for k, v in res5.items()})
    return out


def convert_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A detectron2 state dict (tensors) as detzoo's: renamed, dense-head anchors reordered
    from size-major to ratio-major."""
    model = rename_all(state)
    if "dense_head.head.deltas.weight" not in model:
        return model
    num_anchors = model["dense_head.head.deltas.weight"].shape[0] // 4
    if num_anchors % NUM_ASPECT_RATIOS:
        raise ValueError(f"{num_anchors} anchors per location are not sizes x {NUM_ASPECT_RATIOS} aspect ratios")
    num_sizes = num_anchors // NUM_ASPECT_RATIOS
    return {
        k: transpose_anchors(v, num_anchors, num_sizes) if k.startswith(ANCHOR_OUTPUTS) else v for k, v in model.items()
    }


def class_overrides(model: Mapping[str, Tensor], toolbox: str) -> tuple[dict[str, object], int | None]:
    """The config override setting the number of classes a converted (detzoo-named)
    state dict predicts, and that number (None for an RPN, which has no classes)."""
    if "roi_heads.predictor.cls_score.weight" in model:
        num_classes = model["roi_heads.predictor.cls_score.weight"].shape[0] - 1
        return {"model.roi_heads.num_classes": num_classes}, num_classes
    if "dense_head.head.cls_logits.weight" in model:
        num_anchors = model["dense_head.head.deltas.weight"].shape[0] // 4
        num_classes = model["dense_head.head.cls_logits.weight"].shape[0] // num_anchors
        return {"model.dense_head.num_classes": num_classes}, num_classes
    if "dense_head.head.objectness.weight" in model:
        return {}, None
    raise ValueError(f"not a {toolbox} detector checkpoint: it has no box predictor, RetinaNet head or RPN head")


def coco_classes(num_classes: int) -> tuple[list[str], list[int]]:
    """COCO's 80 categories in id order, as detectron2 and Detectron number them (person
    alone for one class), with their COCO ids; generic names for other class counts."""
    from torchvision.models._meta import _COCO_CATEGORIES

    names = [n for n in _COCO_CATEGORIES if n not in ("__background__", "N/A")]
    return class_list({"CLASSES": names[:1] if num_classes == 1 else names}, num_classes)


def detzoo_checkpoint(
    model: dict[str, Tensor], toolbox: str, overrides: dict[str, object], num_classes: int | None
) -> dict:
    """``{"model", "meta"}`` with the source's conventions and, unless an RPN, its classes."""
    meta: dict[str, object] = {"source": toolbox, "config_overrides": overrides}
    if num_classes is not None:
        meta["class_names"], meta["cat_ids"] = coco_classes(num_classes)
    return {"model": model, "meta": meta}


def _init_name(state: Mapping[str, Tensor], init: str | None) -> str:
    """The ``INITS`` preset of a checkpoint: ``init`` if given, else the one its pixel
    buffers match, else "fair" for a ResNeXt and "msra" otherwise."""
    if init is not None and init not in INITS:
        raise ValueError(f"unknown detectron2 backbone initialisation {init!r}; valid: {', '.join(INITS)}")
    if "pixel_mean" in state and "pixel_std" in state:
        mean, std = (state[k].flatten().tolist() for k in ("pixel_mean", "pixel_std"))
        matching = [
            name for name, o in INITS.items()
            if np.allclose(o["model.pixel_mean"], mean, atol=1e-3) and np.allclose(o["model.pixel_std"], std, atol=1e-3)
        ]
        if init is None and matching:
            return matching[0]
        if init not in matching:
            found = f"backbone initialisation {matching[0]!r}" if matching else f"none of {', '.join(INITS)}"
            not_init = f", not {init!r}" if init else ""
            raise ValueError(f"the checkpoint's pixel_mean {mean} and pixel_std {std} match {found}{not_init}")
        return init
    return init or ("fair" if grouped(state) else "msra")


def convert(checkpoint: Mapping[str, Any], *, init: str | None = None) -> dict:
    """A detzoo checkpoint (``model`` + ``meta``) from a loaded detectron2 checkpoint
    (``{"model": ...}``, as its model zoo's ``.pkl`` and its trainer's ``.pth`` hold, or a
    bare state dict). ``init`` names the ImageNet initialisation it was trained from
    (``INITS``: "msra", "fair", "torchvision"); see the module docstring for the default."""
    state = to_tensors(checkpoint.get("model", checkpoint), "detectron2")
    model = convert_state_dict(state)
    overrides = dict(INITS[_init_name(state, init)])
    classes, num_classes = class_overrides(model, "detectron2")
    overrides.update(classes)
    if "dense_head.head.objectness.weight" in model:
        overrides["model.dense_head.min_size"] = ZERO_SIZE
    if any(k.startswith("roi_heads.mask.") for k in model):
        overrides["model.mask_paste"] = "grid_sample"
    return detzoo_checkpoint(model, "detectron2", overrides, num_classes)
