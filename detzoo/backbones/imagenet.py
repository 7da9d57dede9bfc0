"""ImageNet weights for the ResNet / ResNeXt backbones: the published files by name, their
layouts, and strict loading into a detector's backbone.

A config names where its backbone starts in ``model.backbone.init``: a name of ``WEIGHTS``
(the names mmdetection and detectron2 use for the same files), a local file, or None (from
scratch). Fetching and hash checks are the engine's (``detzoo.engine.initialize``); this
module knows the files and turns their key layouts into the backbone's.

Layouts:

* ``pytorch``: torchvision's names, which are detzoo's (``conv1``, ``bn1``, ``layer1.0.conv1``,
  ``layer1.0.downsample.0``, ...), plus the classifier ``fc``. OpenMMLab's files (mmcv / mmdet
  ``ResNet`` and ``ResNeXt``) use the same names, with ``gnN`` for GroupNorm layers, sometimes
  a ``module.`` prefix (mmengine strips it) and the state under ``state_dict``.
* ``detectron``: Detectron's Caffe2 blobs (``conv1_w``, ``res_conv1_bn_s``,
  ``res2_0_branch2a_w``, ``res2_0_branch1_bn_b``, classifier ``pred_w``), read from a
  Python-2 pickle of numpy arrays. Their norms are affine channels (y = s x + b): they become
  frozen-BN statistics with running mean 0 and running variance 1 - eps, the same map
  (detectron2's ``c2_model_loading`` loads them so).

Conventions that the keys cannot show are checked against the backbone before loading:
the block style (MSRA's caffe-style R-50 / R-101 have the stride in the first 1x1 conv, the
ResNeXts in the 3x3) and weight standardisation (the GN+WS files). The pixel format each
file expects (RGB with ImageNet std for torchvision and the GN+WS files, BGR minus the mean
with std 1 for Detectron's and the Detectron-converted GN files) is the config's
``model.pixel_*``, set by the zoo configs to match their init.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from detzoo.errors import UserError
from detzoo.layers.norm import FrozenBatchNorm2d
from detzoo.layers.state import state_mismatches

LAYOUTS = ("pytorch", "detectron")
_TORCHVISION = "https://download.pytorch.org/models/"
_OPENMMLAB = "https://download.openmmlab.com/pretrain/third_party/"
_DETECTRON = "https://dl.fbaipublicfiles.com/detectron/ImageNetPretrained/"


class PretrainedError(UserError, ValueError):
    """ImageNet weights that do not fit the backbone, or an unknown weights name."""


@dataclass(frozen=True)
class ImageNetWeights:
    """One published ImageNet checkpoint. ``sha256``: the hash prefix its file name carries
    (torchvision's and OpenMMLab's ``<name>-<8 hex>.pth``), checked on every use; Detectron's
    files are checked by the md5 it publishes at ``<url>.md5sum`` (``md5_url``)."""

    url: str
    layout: str
    style: str
    sha256: str | None = None
    conv_ws: bool = False
    source: str = ""

    @property
    def md5_url(self) -> str | None:
        return f"{self.url}.md5sum" if self.sha256 is None else None

    @property
    def check(self) -> str:
        return f"sha256 {self.sha256}..." if self.sha256 else f"md5 from {self.md5_url}"


def _torchvision(file: str) -> ImageNetWeights:
    return ImageNetWeights(_TORCHVISION + file, "pytorch", "pytorch", file.rsplit("-", 1)[1][:8],
                           source="PyTorch model zoo (torchvision IMAGENET1K_V1)")


def _openmmlab(file: str, style: str = "pytorch", conv_ws: bool = False, source: str = "") -> ImageNetWeights:
    return ImageNetWeights(_OPENMMLAB + file, "pytorch", style, file.rsplit("-", 1)[1][:8], conv_ws, source)


def _detectron(path: str, style: str, source: str) -> ImageNetWeights:
    return ImageNetWeights(_DETECTRON + path, "detectron", style, source=source)


# name -> file. torchvision:// and open-mmlab:// are mmdetection's names (mmengine's
# hub/torchvision_0.12.json and hub/openmmlab.json); detectron:// names the path under
# Detectron's ImageNetPretrained/ (its model zoo's "ImageNet Pretrained Models").
WEIGHTS: dict[str, ImageNetWeights] = {
    "torchvision://resnet18": _torchvision("resnet18-f37072fd.pth"),
    "torchvision://resnet34": _torchvision("resnet34-b627a593.pth"),
    "torchvision://resnet50": _torchvision("resnet50-0676ba61.pth"),
    "torchvision://resnet101": _torchvision("resnet101-63fe2227.pth"),
    "torchvision://resnet152": _torchvision("resnet152-394f9c45.pth"),
    "torchvision://resnext50_32x4d": _torchvision("resnext50_32x4d-7cdf4587.pth"),
    "torchvision://resnext101_32x8d": _torchvision("resnext101_32x8d-8ba56ff5.pth"),
    "open-mmlab://resnext101_32x4d": _openmmlab("resnext101_32x4d-a5af3160.pth", source="OpenMMLab"),
    "open-mmlab://resnext101_64x4d": _openmmlab("resnext101_64x4d-ee2c6f71.pth", source="OpenMMLab"),
    "open-mmlab://detectron/resnet50_caffe": _openmmlab(
        "resnet50_caffe-788b5fa3.pth", "caffe", source="MSRA R-50 (Detectron), converted by OpenMMLab"),
    "open-mmlab://detectron/resnet101_caffe": _openmmlab(
        "resnet101_caffe-3ad79236.pth", "caffe", source="MSRA R-101 (Detectron), converted by OpenMMLab"),
    "open-mmlab://detectron/resnet50_gn": _openmmlab(
        "resnet50_gn-9186a21c.pth", source="Detectron's R-50-GN, converted by OpenMMLab"),
    "open-mmlab://detectron/resnet101_gn": _openmmlab(
        "resnet101_gn-cac0ab98.pth", source="Detectron's R-101-GN, converted by OpenMMLab"),
    "open-mmlab://jhu/resnet50_gn_ws": _openmmlab(
        "resnet50_gn_ws-15beedd8.pth", conv_ws=True, source="GN+WS authors (JHU)"),
    "open-mmlab://jhu/resnet101_gn_ws": _openmmlab(
        "resnet101_gn_ws-3e3c308c.pth", conv_ws=True, source="GN+WS authors (JHU)"),
    "open-mmlab://jhu/resnext50_32x4d_gn_ws": _openmmlab(
        "resnext50_32x4d_gn_ws-0d87ac85.pth", conv_ws=True, source="GN+WS authors (JHU)"),
    "open-mmlab://jhu/resnext101_32x4d_gn_ws": _openmmlab(
        "resnext101_32x4d_gn_ws-34ac1a9e.pth", conv_ws=True, source="GN+WS authors (JHU)"),
    "detectron://MSRA/R-50.pkl": _detectron("MSRA/R-50.pkl", "caffe", "MSRA's original ResNet-50"),
    "detectron://MSRA/R-101.pkl": _detectron("MSRA/R-101.pkl", "caffe", "MSRA's original ResNet-101"),
    "detectron://FBResNeXt/X-101-64x4d.pkl": _detectron(
        "FBResNeXt/X-101-64x4d.pkl", "pytorch", "FB's ResNeXt-101-64x4d trained with Torch7"),
    "detectron://20171220/X-101-32x8d.pkl": _detectron(
        "20171220/X-101-32x8d.pkl", "pytorch", "ResNeXt-101-32x8d trained with Caffe2 at FB"),
    "detectron://25093814/X-152-32x8d-IN5k.pkl": _detectron(
        "25093814/X-152-32x8d-IN5k.pkl", "pytorch", "ResNeXt-152-32x8d trained on ImageNet-5k with Caffe2 at FB"),
}


def is_weights_name(init: str) -> bool:
    """Whether ``init`` is meant as a ``WEIGHTS`` name (``scheme://...``) rather than a file."""
    return "://" in init


def check_init(init: str | None) -> None:
    """A backbone's ``init``: None, a local file path, or a known ``WEIGHTS`` name."""
    if init is None:
        return
    if not isinstance(init, str) or not init:
        raise PretrainedError(f"model.backbone.init must be a weights name, a file path or None, got {init!r}")
    if is_weights_name(init) and init not in WEIGHTS:
        raise PretrainedError(f"model.backbone.init: unknown ImageNet weights {init!r}; known: {', '.join(WEIGHTS)}")


_BLOB_PARAMS = {"_bn_s": "weight", "_bn_b": "bias", "_w": "weight", "_b": "bias"}
_BLOB_BRANCHES = {"2a": ("conv1", "bn1"), "2b": ("conv2", "bn2"), "2c": ("conv3", "bn3"),
                  "1": ("downsample.0", "downsample.1")}


def _blob_name(blob: str) -> str | None:
    """A Detectron ImageNet blob's name in detzoo's ResNet (``fc`` for the classifier)."""
    suffix = next((s for s in _BLOB_PARAMS if blob.endswith(s)), None)
    if suffix is None:
        return None
    stem, param, norm = blob[: -len(suffix)], _BLOB_PARAMS[suffix], suffix.startswith("_bn")
    if stem == "pred":
        return f"fc.{param}"
    if stem in ("conv1", "res_conv1"):
        return f"{'bn1' if norm else 'conv1'}.{param}"
    match = re.fullmatch(r"res(\d)_(\d+)_branch(2[abc]|1)", stem)
    if match is None or not 2 <= int(match[1]) <= 5:
        return None
    conv, bn = _BLOB_BRANCHES[match[3]]
    return f"layer{int(match[1]) - 1}.{match[2]}.{bn if norm else conv}.{param}"


def _from_detectron(blobs: Mapping[str, object]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    unknown = []
    for blob, value in blobs.items():
        if blob.endswith("_momentum"):  # SGD state
            continue
        name = _blob_name(blob)
        if name is None:
            unknown.append(blob)
            continue
        out[name] = torch.as_tensor(np.asarray(value, dtype=np.float32))
    if unknown:
        raise PretrainedError(f"{len(unknown)} Detectron blob(s) are no ResNet weights: "
                              f"{', '.join(sorted(unknown)[:6])}")
    eps = FrozenBatchNorm2d(1).eps
    for name in [n for n in out if re.search(r"(bn\d|downsample\.1)\.weight$", n)]:  # affine channels
        norm = name.removesuffix("weight")
        out[norm + "running_mean"] = torch.zeros_like(out[name])
        out[norm + "running_var"] = torch.full_like(out[name], 1.0 - eps)
    return out


def _from_pytorch(state: Mapping[str, object]) -> dict[str, Tensor]:
    out = {}
    for key, value in state.items():
        key = re.sub(r"^module\.", "", key)
        key = re.sub(r"(^|\.)gn(\d)\.", r"\1bn\2.", key)  # OpenMMLab names GroupNorm layers gnN
        if not isinstance(value, Tensor):
            raise PretrainedError(f"{key} holds a {type(value).__name__}, not a tensor")
        out[key] = value
    return out


def detect_layout(checkpoint: Mapping[str, object]) -> str:
    """``detectron`` for Caffe2 blobs (``{"blobs": ...}`` or ``conv1_w`` at the top), else ``pytorch``."""
    return "detectron" if "blobs" in checkpoint or "conv1_w" in checkpoint else "pytorch"


def to_resnet_state(checkpoint: Mapping[str, object], layout: str) -> dict[str, Tensor]:
    """A loaded ImageNet checkpoint of ``layout`` as a state dict with detzoo's ResNet names
    (the classifier as ``fc.*``)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown ImageNet weights layout {layout!r}; valid: {', '.join(LAYOUTS)}")
    if layout == "detectron":
        blobs = checkpoint.get("blobs", checkpoint)
        return _from_detectron(blobs)
    state = checkpoint.get("state_dict", checkpoint.get("model", checkpoint))
    return _from_pytorch(state)


def check_conventions(weights: ImageNetWeights, name: str, *, style: str, conv_ws: bool) -> None:
    """The block style and weight standardisation the file was trained with must be the backbone's."""
    if weights.style != style:
        stride = "first 1x1 conv" if weights.style == "caffe" else "3x3 conv"
        raise PretrainedError(f"model.backbone.init {name} is {weights.style}-style (stride in the {stride}) but "
                              f"model.backbone.style is {style!r}; set model.backbone.style={weights.style!r}")
    if weights.conv_ws != conv_ws:
        trained = "with" if weights.conv_ws else "without"
        raise PretrainedError(f"model.backbone.init {name} was trained {trained} weight standardisation; "
                              f"set model.backbone.conv_ws={weights.conv_ws}")


def load_resnet_state(modules: Mapping[str, nn.Module], state: Mapping[str, Tensor], source: str) -> list[str]:
    """Load an ImageNet ResNet ``state`` (detzoo names) strictly into ``modules``, the parts
    of a detector it fills keyed by their prefix in ``state`` (``""``: the backbone;
    ``"layer4."``: a C4 model's res5 in its box head). Every tensor of the modules must come
    from the file, with its shape; the file may hold more only in its classifier (``fc``)
    and in stages the detector does not build (an RPN on C4 has no res5). Returns those
    unused keys. BN's ``num_batches_tracked`` counters are not weights and stay as they are."""
    counter = "num_batches_tracked"
    own = {prefix + key: value for prefix, module in modules.items()
           for key, value in module.state_dict().items() if not key.endswith(counter)}
    state = {k: v for k, v in state.items() if not k.endswith(counter)}
    built = {key.split(".")[0] for key in own}
    problems = state_mismatches(own, state, may_be_unused=lambda k: k.startswith("fc.") or bool(
        re.match(r"layer\d\.", k)) and k.split(".")[0] not in built)
    if problems:
        raise PretrainedError(f"ImageNet weights {source} do not fit model.backbone (its depth, groups, width "
                              "or norm differ from the file's): " + "; ".join(problems))
    for prefix, module in modules.items():
        module.load_state_dict({k: v if k.endswith(counter) else state[prefix + k]
                                for k, v in module.state_dict().items()})
    return [k for k in state if k not in own]
