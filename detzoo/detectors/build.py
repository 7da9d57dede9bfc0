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
from detzoo.config import ConfigError, check_signature
from detzoo.detectors.two_stage import TwoStageDetector
from detzoo.heads.box import BoxPredictor, ConvFCBoxHead, Res5BoxHead, RoIHeads
from detzoo.heads.mask_keypoint import KeypointBranch, KeypointHead, MaskBranch, MaskHead
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


def _inputs(section: str, source: nn.Module, cfg: Mapping[str, Any]) -> tuple[list[int], int]:
    """Strides and the common channel count of the levels ``cfg.in_features`` of
    ``source`` (the neck, or the backbone of a model without one)."""
    features = cfg.get("in_features")
    if not features:
        raise ConfigError(f"{section}.in_features must list the levels to read, e.g. {list(source.strides)}")
    unknown = [f for f in features if f not in source.out_channels]
    if unknown:
        raise ConfigError(f"{section}.in_features: {unknown[0]!r} is not produced; available: {list(source.out_channels)}")
    channels = {source.out_channels[f] for f in features}
    if len(channels) != 1:
        raise ConfigError(f"{section}.in_features {list(features)} have different channel counts {sorted(channels)}")
    return [source.strides[f] for f in features], channels.pop()


def _branch(
    section: str,
    source: nn.Module,
    roi_cfg: Mapping[str, Any],
    branch: type,
    head: type,
    res5: Res5BoxHead | None = None,
    **head_args: Any,
) -> nn.Module | None:
    """The mask or keypoint branch of ``roi_cfg`` (None when the config has none). Given
    the ``res5`` box head of a C4 model, the branch runs that same res5 before its head."""
    name = section.rsplit(".", 1)[1]
    if roi_cfg.get(name) is None:
        return None
    (pooler_cfg, head_cfg), rest = _split(section, roi_cfg[name], "pooler", "head")
    strides, channels = _inputs(section, source, rest)
    head_in = channels if res5 is None else res5.out_channels
    head_module = _build(head, f"{section}.head", head_cfg, in_channels=head_in, **head_args)
    return _build(
        branch,
        section,
        rest,
        pooler=_build(MultiLevelRoIAlign, f"{section}.pooler", pooler_cfg, strides=strides),
        head=head_module if res5 is None else nn.Sequential(res5.res5, head_module),
    )


def _box_head(section: str, cfg: Mapping[str, Any], backbone: ResNet, channels: int, pooled: int) -> nn.Module:
    kind, rest = cfg.get("type"), {k: v for k, v in cfg.items() if k != "type"}
    if kind == "convfc":
        return _build(ConvFCBoxHead, section, rest, in_channels=channels, pooled_size=pooled)
    if kind == "res5":
        res5, out_channels = backbone.make_res5()
        return _build(Res5BoxHead, section, rest, res5=res5, out_channels=out_channels)
    raise ConfigError(f"{section}.type: unknown box head {kind!r}; valid: 'convfc', 'res5'")


def _roi_heads(roi_cfg: Mapping[str, Any], source: nn.Module, backbone: ResNet) -> RoIHeads:
    (pooler_cfg, head_cfg), roi_rest = _split("model.roi_heads", roi_cfg, "pooler", "box_head")
    strides, channels = _inputs("model.roi_heads", source, roi_rest)
    pooler = _build(MultiLevelRoIAlign, "model.roi_heads.pooler", pooler_cfg, strides=strides)
    box_head = _box_head("model.roi_heads.box_head", head_cfg, backbone, channels, pooler.output_size)
    if "num_classes" not in roi_rest:
        raise ConfigError("model.roi_heads.num_classes is not set")
    num_classes = roi_rest["num_classes"]
    res5 = box_head if isinstance(box_head, Res5BoxHead) else None
    branches = {
        "mask": _branch(
            "model.roi_heads.mask", source, roi_rest, MaskBranch, MaskHead, res5, num_classes=num_classes
        ),
        "keypoint": _branch("model.roi_heads.keypoint", source, roi_rest, KeypointBranch, KeypointHead, res5),
    }
    return _build(
        RoIHeads,
        "model.roi_heads",
        {k: v for k, v in roi_rest.items() if k not in branches},
        pooler=pooler,
        box_head=box_head,
        predictor=BoxPredictor(in_channels=box_head.out_channels, num_classes=num_classes),
        **branches,
    )


def _rpn(rpn_cfg: Mapping[str, Any], source: nn.Module) -> RPN:
    (anchor_cfg,), rpn_rest = _split("model.rpn", rpn_cfg, "anchor_generator")
    strides, channels = _inputs("model.rpn", source, rpn_rest)
    anchors = _build(AnchorGenerator, "model.rpn.anchor_generator", anchor_cfg, strides=strides)
    rpn_head = RPNHead(in_channels=channels, num_anchors=anchors.num_anchors)
    return _build(RPN, "model.rpn", rpn_rest, head=rpn_head, anchor_generator=anchors)


def build_model(cfg: Mapping[str, Any]) -> TwoStageDetector:
    """Build a detector from the ``model`` section of a config. ``neck=None``: heads read
    the backbone (C4); ``rpn=None``: proposals come with the data (Fast R-CNN);
    ``roi_heads=None``: the proposals are the output (RPN)."""
    (backbone_cfg, neck_cfg, rpn_cfg, roi_cfg), rest = _split("model", cfg, "backbone", "neck", "rpn", "roi_heads")
    backbone = _build(ResNet, "model.backbone", backbone_cfg)
    neck = None
    if neck_cfg is not None:
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
    source = backbone if neck is None else neck
    if rpn_cfg is None and roi_cfg is None:
        raise ConfigError("model: rpn and roi_heads are both None; a detector needs at least one")
    rpn = None if rpn_cfg is None else _rpn(rpn_cfg, source)
    roi_heads = None if roi_cfg is None else _roi_heads(roi_cfg, source, backbone)
    return _build(TwoStageDetector, "model", rest, backbone=backbone, neck=neck, rpn=rpn, roi_heads=roi_heads)
