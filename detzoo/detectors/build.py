"""The one place where a config's ``model`` section becomes modules.

Every section is checked against the signature of the constructor it feeds before
anything is built, so a misspelt key fails at once with a suggestion. Values that one
module produces (channels, strides, anchor counts) are passed on here and may not be
set in the config.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from torch import nn

from detzoo.backbones.resnet import ResNet
from detzoo.config import ConfigError, check_keys, check_signature
from detzoo.detectors.two_stage import TwoStageDetector
from detzoo.heads.box import BoxPredictor, BoxRoIHead, ConvFCBoxHead
from detzoo.heads.rpn import RPN, RPNHead
from detzoo.layers.anchors import AnchorGenerator
from detzoo.layers.roi_pool import MultiLevelRoIAlign
from detzoo.necks.fpn import FPN

NECKS: dict[str, type[nn.Module]] = {"FPN": FPN}


def _build(fn: Callable, section: str, cfg: Mapping[str, Any], **derived: Any) -> Any:
    """``fn(**cfg, **derived)`` after checking ``cfg`` against ``fn``'s signature."""
    clash = sorted(set(cfg) & set(derived))
    if clash:
        raise ConfigError(
            f"{section}.{clash[0]} is derived from the modules it connects and may not be set in a config"
        )
    check_signature(section, cfg, fn, exclude=derived)
    return fn(**cfg, **derived)


def _split(section: str, cfg: Mapping[str, Any], *keys: str) -> tuple[list[Any], dict[str, Any]]:
    """Take the required sub-sections ``keys`` out of ``cfg``; return them and the rest."""
    missing = [k for k in keys if k not in cfg]
    if missing:
        raise ConfigError(f"{section}: missing required key '{section}.{missing[0]}'")
    return [cfg[k] for k in keys], {k: v for k, v in cfg.items() if k not in keys}


def _channels(section: str, out_channels: Mapping[str, int], features: list[str]) -> int:
    unknown = [f for f in features if f not in out_channels]
    if unknown:
        raise ConfigError(
            f"{section}.in_features: {unknown[0]!r} is not produced by the neck; it gives {list(out_channels)}"
        )
    channels = {out_channels[f] for f in features}
    if len(channels) != 1:
        raise ConfigError(f"{section}.in_features {features} have different channel counts {sorted(channels)}")
    return channels.pop()


def build_model(cfg: Mapping[str, Any]) -> TwoStageDetector:
    """Build a detector from the ``model`` section of a config."""
    (backbone_cfg, neck_cfg, rpn_cfg, roi_cfg), rest = _split("model", cfg, "backbone", "neck", "rpn", "roi_heads")
    backbone = _build(ResNet, "model.backbone", backbone_cfg)

    neck_type = neck_cfg.get("type")
    if neck_type not in NECKS:
        raise ConfigError(f"model.neck.type: unknown neck {neck_type!r}; valid: {', '.join(NECKS)}")
    neck = _build(
        NECKS[neck_type],
        "model.neck",
        {k: v for k, v in neck_cfg.items() if k != "type"},
        in_channels=backbone.out_channels,
        in_strides=backbone.strides,
    )

    (anchor_cfg,), rpn_rest = _split("model.rpn", rpn_cfg, "anchor_generator")
    rpn_features = list(rpn_rest.get("in_features", ()))
    anchors = _build(
        AnchorGenerator,
        "model.rpn.anchor_generator",
        anchor_cfg,
        strides=[neck.strides[f] for f in rpn_features if f in neck.strides],
    )
    rpn_head = RPNHead(
        in_channels=_channels("model.rpn", neck.out_channels, rpn_features), num_anchors=anchors.num_anchors
    )
    rpn = _build(RPN, "model.rpn", rpn_rest, head=rpn_head, anchor_generator=anchors)

    (pooler_cfg, head_cfg), roi_rest = _split("model.roi_heads", roi_cfg, "pooler", "box_head")
    roi_features = list(roi_rest.get("in_features", ()))
    pooler = _build(
        MultiLevelRoIAlign,
        "model.roi_heads.pooler",
        pooler_cfg,
        strides=[neck.strides[f] for f in roi_features if f in neck.strides],
    )
    box_head = _build(
        ConvFCBoxHead,
        "model.roi_heads.box_head",
        head_cfg,
        in_channels=_channels("model.roi_heads", neck.out_channels, roi_features),
        pooled_size=pooler.output_size,
    )
    predictor = BoxPredictor(in_channels=box_head.out_channels, num_classes=roi_rest.get("num_classes", 0))
    roi_heads = _build(BoxRoIHead, "model.roi_heads", roi_rest, pooler=pooler, box_head=box_head, predictor=predictor)

    check_keys("model", rest, ("pixel_mean", "pixel_std", "input_format", "pixel_scale", "size_divisibility"))
    return _build(TwoStageDetector, "model", rest, backbone=backbone, neck=neck, rpn=rpn, roi_heads=roi_heads)
