"""Other toolboxes' checkpoints -> detzoo checkpoints (``{"model": state_dict, "meta": ...}``),
one converter per source format. ``detzoo convert --from FORMAT``, the zoo's ``Weights.Format``
and weights by name (``detzoo.zoo.weights``) all go through ``convert_checkpoint``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from detzoo.zoo.converters import detectron, detectron2, mmdet, torchvision


def _from_torchvision(checkpoint: Mapping[str, Any]) -> dict:
    """torchvision publishes bare state dicts; a training script's checkpoint holds one under ``model``."""
    return torchvision.convert(checkpoint.get("model", checkpoint))


# format -> converter of a loaded checkpoint (``detzoo.engine.checkpoint.load_checkpoint``)
CONVERTERS: dict[str, Callable[[Mapping[str, Any]], dict]] = {
    "torchvision": _from_torchvision,
    "mmdet": mmdet.convert,
    "detectron2": detectron2.convert,
    "detectron": detectron.convert,
}


# Every config key a converter records in a checkpoint's ``meta.config_overrides``: where the
# source toolbox's model differs from detzoo's defaults (pixels, backbone style, anchors,
# RoI pooling, box coding, size limits, resizing, mask pasting) and its number of classes.
# A checkpoint may set these and no other key (``detzoo.api.config_with_meta``).
CONVENTION_KEYS: tuple[str, ...] = (
    "data.resize",
    "model.input_format",
    "model.pixel_scale",
    "model.pixel_mean",
    "model.pixel_std",
    "model.mask_paste",
    "model.backbone.style",
    "model.neck.top_block.in_feature",
    "model.neck.top_block.relu_before_p7",
    *(f"model.dense_head.{key}" for key in ("num_classes", "min_size", "clamp_shrink", "smooth_l1_beta",
                                            "post_nms_topk_train", "detections_per_image")),
    *(f"model.dense_head.anchor_generator.{key}" for key in ("offset", "round_base", "strides_from_grid", "sizes")),
    *(f"model.roi_heads.{key}" for key in ("num_classes", "min_size", "clamp_shrink", "smooth_l1_beta")),
    *(f"model.{section}.pooler.{key}" for section in ("roi_heads", "roi_heads.mask", "roi_heads.keypoint")
      for key in ("aligned", "sampling_ratio")),
)


def convert_checkpoint(checkpoint: Mapping[str, Any], source_format: str) -> dict:
    """A detzoo checkpoint (``model`` + ``meta``) from a loaded checkpoint of ``source_format``."""
    if source_format not in CONVERTERS:
        raise ValueError(f"no converter for {source_format!r} checkpoints; detzoo converts {', '.join(CONVERTERS)}")
    converted = CONVERTERS[source_format](checkpoint)
    unlisted = sorted(set(converted["meta"]["config_overrides"]) - set(CONVENTION_KEYS))
    if unlisted:  # a converter and the list disagree: a bug, found by every conversion test
        raise RuntimeError(f"the {source_format} converter records {unlisted}, which CONVENTION_KEYS lacks")
    return converted


# the stem convolution's key in a detector's state dict, in each toolbox's layout
_STEMS = {
    "detzoo": "backbone.conv1.weight",
    "torchvision": "backbone.body.conv1.weight",
    "detectron2": "backbone.bottom_up.stem.conv1.weight",
}


def detect_format(checkpoint: Mapping[str, Any]) -> str | None:
    """The toolbox whose detector checkpoint layout ``checkpoint`` (as loaded) has, by its
    keys: ``detzoo``, ``torchvision``, ``mmdet`` (its heads are ``rpn_head``, ``roi_head``,
    ``bbox_head``), ``detectron2`` or ``detectron`` (Caffe2 blobs); None when none fits."""
    if "blobs" in checkpoint or "conv1_w" in checkpoint:
        return "detectron"
    state = checkpoint.get("state_dict", checkpoint.get("model", checkpoint))
    if not isinstance(state, Mapping):
        return None
    if any(str(k).startswith(("rpn_head.", "roi_head.", "bbox_head.")) for k in state):
        return "mmdet"
    found = [name for name, stem in _STEMS.items() if stem in state]
    return found[0] if found else None
