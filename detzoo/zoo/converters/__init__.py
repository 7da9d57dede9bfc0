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


def convert_checkpoint(checkpoint: Mapping[str, Any], source_format: str) -> dict:
    """A detzoo checkpoint (``model`` + ``meta``) from a loaded checkpoint of ``source_format``."""
    if source_format not in CONVERTERS:
        raise ValueError(f"no converter for {source_format!r} checkpoints; detzoo converts {', '.join(CONVERTERS)}")
    return CONVERTERS[source_format](checkpoint)


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
