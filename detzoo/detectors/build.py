"""The one place where a config's ``model`` section becomes modules.

Every slot (backbone, neck and its top block, dense head, box head) picks its class the
same way: its ``type`` key, looked up in the slot's table below. Every section is checked
against the signature of the constructor it feeds before anything is built, so a misspelt
key fails at once with a suggestion. Values that one module produces (channels, strides,
anchor counts) are passed on here and may not be set in the config.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from torch import nn

import inspect

from detzoo.backbones.resnet import ResNet
from detzoo.config import ConfigError, check_dict, check_signature
from detzoo.detectors.model import DetectionModel
from detzoo.errors import UserError
from detzoo.heads.box import BoxPredictor, ConvFCBoxHead, Res5BoxHead, RoIHeads
from detzoo.heads.mask_keypoint import KeypointBranch, KeypointHead, MaskBranch, MaskHead
from detzoo.heads.retina import RetinaNet, RetinaNetHead
from detzoo.heads.rpn import RPN, RPNHead
from detzoo.layers.anchors import AnchorGenerator
from detzoo.layers.roi_pool import MultiLevelRoIAlign
from detzoo.necks.fpg import FPG
from detzoo.necks.fpn import FPN, LastLevelMaxPool, LastLevelP6P7
from detzoo.necks.nas_fpn import NASFPN

# each slot's ``type`` -> class
BACKBONES: dict[str, type[nn.Module]] = {"ResNet": ResNet}
NECKS: dict[str, type[nn.Module]] = {"FPN": FPN, "NASFPN": NASFPN, "FPG": FPG}
TOP_BLOCKS: dict[str, type[nn.Module]] = {"maxpool": LastLevelMaxPool, "p6p7": LastLevelP6P7}
DENSE_HEADS: dict[str, type[nn.Module]] = {"rpn": RPN, "retina": RetinaNet}
BOX_HEADS: dict[str, type[nn.Module]] = {"convfc": ConvFCBoxHead, "res5": Res5BoxHead}
DEFAULT_BACKBONE = "ResNet"  # the only one: configs may leave model.backbone.type out


def _build(fn: Callable, section: str, cfg: Mapping[str, Any], **derived: Any) -> Any:
    """``fn(**cfg, **derived)`` after checking ``cfg`` against ``fn``'s signature. What the
    constructor refuses (its own checks' ValueError, torch's RuntimeError for a negative
    size) comes from the config's values: a ``ConfigError`` naming the section."""
    check_dict(section, cfg)
    clash = sorted(set(cfg) & set(derived))
    if clash:
        raise ConfigError(
            f"{section}.{clash[0]} is derived from the modules it connects and may not be set in a config"
        )
    check_signature(section, cfg, fn, exclude=derived)
    try:
        return fn(**cfg, **derived)
    except UserError:  # already names its culprit
        raise
    except (ValueError, RuntimeError) as e:
        raise ConfigError(f"{section}: {e}") from e


def _num_classes(section: str, cfg: Mapping[str, Any]) -> int:
    """``cfg["num_classes"]``, which must be a positive integer."""
    if "num_classes" not in cfg:
        raise ConfigError(f"{section}.num_classes is not set")
    value = cfg["num_classes"]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{section}.num_classes must be a positive integer, got {value!r}")
    return value


def _typed(
    section: str, cfg: Any, table: Mapping[str, type[nn.Module]], default: str | None = None
) -> tuple[type[nn.Module], dict[str, Any]]:
    """The class that the ``type`` of a slot's section (``default`` when not set) names in
    the slot's ``table``, and the section's other keys."""
    valid = ", ".join(map(repr, table))
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"{section} must be a dict with a type ({valid}), got {cfg!r}")
    kind = cfg.get("type", default)
    if kind is None:
        raise ConfigError(f"{section}.type is not set; valid: {valid}")
    if not isinstance(kind, str) or kind not in table:
        raise ConfigError(f"{section}.type: unknown {section.rsplit('.', 1)[1]} type {kind!r}; valid: {valid}")
    return table[kind], {k: v for k, v in cfg.items() if k != "type"}


def _default(fn: Callable, name: str) -> Any:
    return inspect.signature(fn).parameters[name].default


def _split(section: str, cfg: Mapping[str, Any], *keys: str) -> tuple[list[Any], dict[str, Any]]:
    """Take the required sub-sections ``keys`` out of ``cfg``; return them and the rest."""
    check_dict(section, cfg)
    missing = [k for k in keys if k not in cfg]
    if missing:
        raise ConfigError(f"{section}: missing required key '{section}.{missing[0]}'")
    return [cfg[k] for k in keys], {k: v for k, v in cfg.items() if k not in keys}


def _inputs(section: str, source: nn.Module, cfg: Mapping[str, Any]) -> tuple[list[int], int]:
    """Strides and the common channel count of the levels ``cfg.in_features`` of
    ``source`` (the neck, or the backbone of a model without one)."""
    features = cfg.get("in_features")
    if not features or not isinstance(features, (list, tuple)):
        raise ConfigError(f"{section}.in_features must list the levels to read, e.g. {list(source.strides)}")
    unknown = [f for f in features if f not in source.out_channels]
    if unknown:
        raise ConfigError(f"{section}.in_features: {unknown[0]!r} is not produced; "
                          f"available: {list(source.out_channels)}")
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
    cls, rest = _typed(section, cfg, BOX_HEADS)
    if cls is ConvFCBoxHead:
        return _build(cls, section, rest, in_channels=channels, pooled_size=pooled)
    res5, out_channels = backbone.make_res5()
    return _build(cls, section, rest, res5=res5, out_channels=out_channels)


def _roi_heads(roi_cfg: Mapping[str, Any], source: nn.Module, backbone: ResNet) -> RoIHeads:
    (pooler_cfg, head_cfg), roi_rest = _split("model.roi_heads", roi_cfg, "pooler", "box_head")
    strides, channels = _inputs("model.roi_heads", source, roi_rest)
    pooler = _build(MultiLevelRoIAlign, "model.roi_heads.pooler", pooler_cfg, strides=strides)
    box_head = _box_head("model.roi_heads.box_head", head_cfg, backbone, channels, pooler.output_size)
    num_classes = _num_classes("model.roi_heads", roi_rest)
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


def _dense_head(cfg: Mapping[str, Any], source: nn.Module) -> RPN | RetinaNet:
    """``type="rpn"``: class-agnostic proposals, with an optional ``head`` (RPNHead
    arguments); ``type="retina"``: RetinaNet, whose ``num_classes`` and ``head``
    (RetinaNetHead arguments) are keys of this section."""
    section = "model.dense_head"
    cls, rest = _typed(section, cfg, DENSE_HEADS)
    (anchor_cfg,), rest = _split(section, rest, "anchor_generator")
    strides, channels = _inputs(section, source, rest)
    anchors = _build(AnchorGenerator, f"{section}.anchor_generator", anchor_cfg, strides=strides)
    head_args = dict(in_channels=channels, num_anchors=anchors.num_anchors)
    if cls is RPN:
        head = _build(RPNHead, f"{section}.head", rest.pop("head", {}), **head_args)
    else:
        num_classes = _num_classes(section, rest)
        (head_cfg,), rest = _split(section, {k: v for k, v in rest.items() if k != "num_classes"}, "head")
        head = _build(
            RetinaNetHead, f"{section}.head", head_cfg, **head_args, num_classes=num_classes, num_levels=len(strides)
        )
    return _build(cls, section, rest, head=head, anchor_generator=anchors)


def _top_block(cfg: Mapping[str, Any] | None, backbone: ResNet, out_channels: int) -> nn.Module | None:
    """The extra levels of an FPN: ``maxpool`` (P6, two-stage models) or ``p6p7``
    (RetinaNet: convs on ``in_feature``, a backbone level or the FPN's top output)."""
    if cfg is None:
        return None
    section = "model.neck.top_block"
    cls, rest = _typed(section, cfg, TOP_BLOCKS)
    if cls is LastLevelMaxPool:
        return _build(cls, section, rest)
    source = rest.get("in_feature")
    in_channels = backbone.out_channels[source] if source in backbone.out_channels else out_channels
    return _build(cls, section, rest, in_channels=in_channels, out_channels=out_channels)


def _neck(cfg: Mapping[str, Any], backbone: ResNet) -> nn.Module:
    cls, rest = _typed("model.neck", cfg, NECKS)
    derived: dict[str, Any] = dict(in_channels=backbone.out_channels, in_strides=backbone.strides)
    if cls is FPN:
        out_channels = rest.get("out_channels", _default(FPN, "out_channels"))
        derived["top_block"] = _top_block(rest.pop("top_block", None), backbone, out_channels)
    return _build(cls, "model.neck", rest, **derived)


def num_classes_key(model_cfg: Mapping[str, Any]) -> str:
    """The config key that sets the number of classes a model predicts."""
    return "model.roi_heads.num_classes" if model_cfg.get("roi_heads") is not None else "model.dense_head.num_classes"


def build_model(cfg: Mapping[str, Any]) -> DetectionModel:
    """Build a detector from the ``model`` section of a config. ``neck=None``: heads read
    the backbone (C4); ``dense_head=None``: proposals come with the data (Fast R-CNN);
    ``roi_heads=None``: the dense head's outputs are the result (RPN, RetinaNet)."""
    (backbone_cfg, neck_cfg, dense_cfg, roi_cfg), rest = _split(
        "model", cfg, "backbone", "neck", "dense_head", "roi_heads"
    )
    backbone_cls, backbone_rest = _typed("model.backbone", backbone_cfg, BACKBONES, DEFAULT_BACKBONE)
    backbone = _build(backbone_cls, "model.backbone", backbone_rest)
    neck = None if neck_cfg is None else _neck(neck_cfg, backbone)
    source = backbone if neck is None else neck
    if dense_cfg is None and roi_cfg is None:
        raise ConfigError("model: dense_head and roi_heads are both None; a detector needs at least one")
    dense_head = None if dense_cfg is None else _dense_head(dense_cfg, source)
    roi_heads = None if roi_cfg is None else _roi_heads(roi_cfg, source, backbone)
    return _build(
        DetectionModel, "model", rest, backbone=backbone, neck=neck, dense_head=dense_head, roi_heads=roi_heads
    )
