"""Converting detectron2 and Detectron (Caffe2) checkpoints, and reading ``.pkl`` files safely.

The checkpoints are made here with those toolboxes' own key names and shapes, generated
from their documented layouts (detectron2: ``modeling/backbone/{resnet,fpn}.py``,
``proposal_generator/rpn.py``, ``roi_heads/{box_head,fast_rcnn,mask_head,keypoint_head,
roi_heads}.py``, ``meta_arch/retinanet.py``; Detectron: ``modeling/{ResNet,FPN,rpn_heads,
fast_rcnn_heads,mask_rcnn_heads,keypoint_rcnn_heads,retinanet_heads}.py`` and
``detector.py``'s AffineChannel and BilinearInterpolation), for the real R-50 / X-101
shapes, with seeded random values. Each is written as its toolbox writes it (detectron2:
a ``.pkl`` of numpy arrays or a ``.pth``; Detectron: a Python 2 pickle with momentum blobs
and the ImageNet classifier), read by the converter's ``load``, converted, loaded strictly
into the detzoo model of the zoo config of that row, and run on a real COCO image.
"""

from __future__ import annotations

import math
import pickle
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import detzoo
from detzoo.api import build_detector
from detzoo.config import load_config
from detzoo.data.images import read_image
from detzoo.engine.checkpoint import load_checkpoint, load_pickle
from detzoo.errors import CheckpointError
from detzoo.layers.anchors import AnchorGenerator
from detzoo.layers.norm import build_norm
from detzoo.structures import Instances
from detzoo.zoo.converters import detectron, detectron2
from detzoo.zoo.converters import torchvision as tv_converter
from detzoo.zoo.converters.rules import rename

IMAGES = sorted((Path(__file__).parent / "data" / "coco" / "images").glob("*.jpg"))
SMALL = ["data.test_scale=256", "data.max_size=384"]

# ---------------------------------------------------------------------------------------
# The layouts: {name: shape} of each toolbox's checkpoint of a family


def resnet_convs(depth: int, groups: int = 1, width_per_group: int = 64):
    """(stage, block, Caffe2 branch name, weight shape) of each conv of a bottleneck
    ResNet / ResNeXt body, res2-res5: branch2a/2b/2c (1x1, 3x3 grouped, 1x1) and the
    projection shortcut branch1 of each stage's first block."""
    in_channels, width = 64, groups * width_per_group
    for stage, num_blocks in zip((2, 3, 4, 5), {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[depth]):
        out = 64 * 2**stage
        for i in range(num_blocks):
            yield stage, i, "branch2a", (width, in_channels, 1, 1)
            yield stage, i, "branch2b", (width, width // groups, 3, 3)
            yield stage, i, "branch2c", (out, width, 1, 1)
            if i == 0:
                yield stage, i, "branch1", (out, in_channels, 1, 1)
            in_channels = out
        width *= 2


def num_classes(family: str) -> int:
    return 1 if family.startswith("keypoint") else 80


def d2_layout(family: str, groups: int = 1, width_per_group: int = 64) -> dict[str, tuple[int, ...]]:
    """A detectron2 model on a ResNet-50 (ResNeXt with ``groups``): ``faster`` / ``mask`` /
    ``keypoint`` (FPN), ``faster_c4`` / ``mask_c4`` (res5 in the RoI heads), ``retinanet``.
    Convs of the ResNet carry a frozen BN under ``.norm``; the others a bias."""
    c4, retina = family.endswith("_c4"), family == "retinanet"
    body = "backbone." if c4 else "backbone.bottom_up."
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name: str, shape: tuple[int, ...], norm: bool = False, transposed: bool = False) -> None:
        shapes[f"{name}.weight"] = shape  # a transposed conv's weight is (in, out, k, k)
        params = [f"norm.{p}" for p in ("weight", "bias", "running_mean", "running_var")] if norm else ["bias"]
        shapes.update({f"{name}.{p}": shape[transposed : transposed + 1] for p in params})

    conv(f"{body}stem.conv1", (64, 3, 7, 7), norm=True)
    parts = {"branch2a": "conv1", "branch2b": "conv2", "branch2c": "conv3", "branch1": "shortcut"}
    for stage, i, branch, shape in resnet_convs(50, groups, width_per_group):
        conv(f"{'roi_heads.' if c4 and stage == 5 else body}res{stage}.{i}.{parts[branch]}", shape, norm=True)
    for level in () if c4 else range(3 if retina else 2, 6):
        conv(f"backbone.fpn_lateral{level}", (256, 64 * 2**level, 1, 1))
        conv(f"backbone.fpn_output{level}", (256, 256, 3, 3))
    if retina:
        conv("backbone.top_block.p6", (256, 2048, 3, 3))
        conv("backbone.top_block.p7", (256, 256, 3, 3))
        for i in (0, 2, 4, 6):  # Sequential(conv, ReLU, conv, ReLU, ...)
            conv(f"head.cls_subnet.{i}", (256, 256, 3, 3))
            conv(f"head.bbox_subnet.{i}", (256, 256, 3, 3))
        conv("head.cls_score", (9 * 80, 256, 3, 3))
        conv("head.bbox_pred", (9 * 4, 256, 3, 3))
        return shapes
    channels, anchors, box_dim, k = (1024, 15, 2048, num_classes(family)) if c4 else (256, 3, 1024, num_classes(family))
    conv("proposal_generator.rpn_head.conv", (channels, channels, 3, 3))
    conv("proposal_generator.rpn_head.objectness_logits", (anchors, channels, 1, 1))
    conv("proposal_generator.rpn_head.anchor_deltas", (4 * anchors, channels, 1, 1))
    if not c4:
        conv("roi_heads.box_head.fc1", (1024, 256 * 7 * 7))
        conv("roi_heads.box_head.fc2", (1024, 1024))
    conv("roi_heads.box_predictor.cls_score", (k + 1, box_dim))  # background last
    conv("roi_heads.box_predictor.bbox_pred", (4 * k, box_dim))
    if family.startswith("mask"):
        for i in () if c4 else range(1, 5):
            conv(f"roi_heads.mask_head.mask_fcn{i}", (256, 256, 3, 3))
        conv("roi_heads.mask_head.deconv", (2048 if c4 else 256, 256, 2, 2), transposed=True)
        conv("roi_heads.mask_head.predictor", (80, 256, 1, 1))
    if family == "keypoint":
        for i in range(1, 9):
            conv(f"roi_heads.keypoint_head.conv_fcn{i}", (512, 256 if i == 1 else 512, 3, 3))
        conv("roi_heads.keypoint_head.score_lowres", (512, 17, 4, 4), transposed=True)
    return shapes


def c2_layout(family: str, depth: int = 50, groups: int = 1, width_per_group: int = 64) -> dict[str, tuple[int, ...]]:
    """A Detectron blob dict: ``rpn`` / ``fast`` / ``faster`` / ``mask`` / ``keypoint`` (FPN),
    ``rpn_c4`` / ``faster_c4`` / ``mask_c4``, ``retinanet``. Convs of the ResNet have an
    AffineChannel (``_bn_s``, ``_bn_b``), the others a bias; heads are created on the finest
    level (``_fpn2``, RetinaNet ``_fpn3``) and shared. Detectron's files also hold the
    ImageNet classifier ``pred`` and every blob of the initialisation (the R-50-C4 RPN's
    unused res5), and the SGD momentum of the trained blobs."""
    c4, retina = family.endswith("_c4"), family == "retinanet"
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name: str, shape: tuple[int, ...], affine=False, bias=True, transposed=False) -> None:
        shapes[f"{name}_w"] = shape  # a transposed conv's weight is (in, out, k, k)
        params = ["_bn_s", "_bn_b"] if affine else ["_b"] if bias else []
        shapes.update({f"{name}{p}": shape[transposed : transposed + 1] for p in params})

    conv("conv1", (64, 3, 7, 7), bias=False)
    shapes["res_conv1_bn_s"] = shapes["res_conv1_bn_b"] = (64,)
    last = {}
    for stage, i, branch, shape in resnet_convs(depth, groups, width_per_group):
        conv(f"res{stage}_{i}_{branch}", shape, affine=True)
        last[stage] = i
    shapes["pred_w"], shapes["pred_b"] = (1000, 2048), (1000,)
    frozen = set(shapes)  # FREEZE_AT 2 and affine channels: the blobs without momentum
    levels = () if c4 else range(3 if retina else 2, 6)
    for level in levels:
        lateral = "" if level == 5 else "_lateral"  # the top level's 1x1 conv seeds the top-down path
        conv(f"fpn_inner_res{level}_{last[level]}_sum{lateral}", (256, 64 * 2**level, 1, 1))
        conv(f"fpn_res{level}_{last[level]}_sum", (256, 256, 3, 3))
    if retina:
        conv("fpn_6", (256, 2048, 3, 3))
        conv("fpn_7", (256, 256, 3, 3))
        for n in range(4):
            conv(f"retnet_cls_conv_n{n}_fpn3", (256, 256, 3, 3))
            conv(f"retnet_bbox_conv_n{n}_fpn3", (256, 256, 3, 3))
        conv("retnet_cls_pred_fpn3", (9 * 80, 256, 3, 3))  # sigmoid: no background channel
        conv("retnet_bbox_pred_fpn3", (9 * 4, 256, 3, 3))
    if family not in ("fast", "retinanet"):
        channels, anchors, level = (1024, 15, "") if c4 else (256, 3, "_fpn2")
        conv(f"conv_rpn{level}", (channels, channels, 3, 3))
        conv(f"rpn_cls_logits{level}", (anchors, channels, 1, 1))
        conv(f"rpn_bbox_pred{level}", (4 * anchors, channels, 1, 1))
    if not family.startswith(("rpn", "retinanet")):
        box_dim, k = (2048, num_classes(family)) if c4 else (1024, num_classes(family))
        if not c4:
            conv("fc6", (1024, 256 * 7 * 7))
            conv("fc7", (1024, 1024))
        conv("cls_score", (k + 1, box_dim))  # background first
        conv("bbox_pred", (4 * (k + 1), box_dim))
    if family.startswith("mask"):
        for i in () if c4 else range(1, 5):
            conv(f"_[mask]_fcn{i}", (256, 256, 3, 3))
        conv("conv5_mask", (2048 if c4 else 256, 256, 2, 2), transposed=True)
        conv("mask_fcn_logits", (81, 256, 1, 1))
    if family == "keypoint":
        for i in range(1, 9):
            conv(f"conv_fcn{i}", (512, 256 if i == 1 else 512, 3, 3))
        conv("kps_score_lowres", (512, 17, 4, 4), transposed=True)
        conv("kps_score", (17, 17, 4, 4), transposed=True)  # the fixed bilinear upsampling, set by ``fill``
    trained = [k for k in shapes if k not in frozen and not k.startswith("kps_score_")]
    return {**shapes, **{f"{k}_momentum": shapes[k] for k in trained}}


def fill(shapes: dict[str, tuple[int, ...]], seed: int = 0, gains: dict[str, float] | None = None) -> dict:
    """Seeded values a network computes sanely with: weights of variance 2 / fan-in (times
    ``gains[pattern]`` for the names matching a pattern), norms of scale 0.5-1 (0.1-0.2 at
    the end of a residual branch), small biases and means, positive variances."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in shapes.items():
        if re.search(r"(norm\.weight|_bn_s)$", name):
            residual_end = re.search(r"conv3|branch2c", name)
            value = torch.empty(shape).uniform_(0.5, 1.0, generator=g) * (0.2 if residual_end else 1.0)
        elif name.endswith("running_var"):
            value = torch.empty(shape).uniform_(0.5, 1.5, generator=g)
        elif re.search(r"(bias|running_mean|_b)$", name):
            value = torch.randn(shape, generator=g) * 0.1
        else:
            value = torch.randn(shape, generator=g) * math.sqrt(2.0 / math.prod(shape[1:]))
            value *= math.prod(gain for pattern, gain in (gains or {}).items() if re.search(pattern, name))
        out[name] = value
    if "kps_score_w" in out:  # Detectron's BilinearInterpolation: a fixed per-channel bilinear filter
        f = torch.tensor([0.25, 0.75, 0.75, 0.25])
        out["kps_score_w"] = torch.eye(17)[:, :, None, None] * torch.outer(f, f)
        out["kps_score_b"] = torch.zeros(17)
    return out


# ---------------------------------------------------------------------------------------
# Files as the toolboxes write them


class Py2Pickler(pickle._Pickler):
    """Pickles as Python 2 and numpy 1 did, as Detectron's files are: byte strings as
    Python 2 ``str`` (BINSTRING, decoded as latin1 by the reader) and numpy under
    ``numpy.core``."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj: bytes) -> None:
        self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    def save_global(self, obj, name=None) -> None:
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)

    dispatch[bytes] = save_bytes


def write_detectron(path: Path, blobs: dict[str, torch.Tensor]) -> Path:
    with open(path, "wb") as f:
        Py2Pickler(f, protocol=2).dump({"blobs": {k: v.numpy() for k, v in blobs.items()}, "cfg": "MODEL: ..."})
    return path


def write_detectron2(path: Path, state: dict[str, torch.Tensor]) -> Path:
    """Its model zoo's ``.pkl`` (numpy arrays) or its trainer's ``.pth``."""
    if path.suffix == ".pkl":
        with open(path, "wb") as f:
            pickle.dump({"model": {k: v.numpy() for k, v in state.items()}, "__author__": "Detectron2 Model Zoo"}, f)
    else:
        torch.save({"model": state, "iteration": 90000}, path)
    return path


def quick(config: dict) -> list[str]:
    """Overrides for a quick inference (the weights' layout is what is tested): a small
    image, 50 proposals, 10 detections."""
    model = config["model"]
    dense = [] if model["dense_head"] is None else ["model.dense_head.post_nms_topk_test=50"]
    if model["roi_heads"] is not None:
        return SMALL + dense + ["model.roi_heads.detections_per_image=10"]
    if model["dense_head"]["type"] == "retina":
        return SMALL + ["model.dense_head.topk_candidates=50", "model.dense_head.detections_per_image=10"]
    return SMALL + dense


def run_once(detector, family: str) -> None:
    """One inference on a real image; Fast R-CNN on two given proposals."""
    detector.eval()
    if detector.model.needs_proposals:
        image = detector.transform(read_image(IMAGES[0]))[0]
        boxes = torch.tensor([[10.0, 20.0, 120.0, 150.0], [50.0, 40.0, 200.0, 180.0]])
        proposals = [Instances(boxes=boxes, labels=torch.zeros(2, dtype=torch.int64))]
        result = detector.model([image], proposals=proposals)[0]
        assert result.boxes.shape[1] == 4
        return
    pred = detector.predict(IMAGES[0])[0]
    assert pred["boxes"].shape[1:] == (4,) and len(pred["scores"]) == len(pred["boxes"])
    if family.startswith("mask"):
        assert pred["masks"].shape[0] == len(pred["boxes"])
    if family == "keypoint":
        assert pred["keypoints"].shape[1:] == (17, 3)


# ---------------------------------------------------------------------------------------
# Every family of both formats lands strictly in its detzoo model and runs

D2_FAMILIES = {  # family -> (detzoo config, file format)
    "faster": ("faster_rcnn_r50_caffe_fpn_1x_coco", ".pkl"),
    "mask": ("mask_rcnn_r50_caffe_fpn_1x_coco", ".pth"),
    "keypoint": ("keypoint_rcnn_r50_caffe_fpn_1x_coco", ".pkl"),
    "faster_c4": ("faster_rcnn_r50_caffe_c4_1x_coco", ".pth"),
    "mask_c4": ("mask_rcnn_r50_caffe_c4_1x_coco", ".pkl"),
    "retinanet": ("retinanet_r50_caffe_fpn_1x_coco", ".pkl"),
}


@pytest.mark.parametrize("family", list(D2_FAMILIES))
def test_detectron2_checkpoint_lands_and_runs(family, tmp_path):
    config, suffix = D2_FAMILIES[family]
    state = fill(d2_layout(family))
    src = write_detectron2(tmp_path / f"model_final{suffix}", state)
    converted = detectron2.convert(load_checkpoint(src))
    shared_res5 = ("roi_heads.mask.head.0.", "roi_heads.keypoint.head.0.")  # C4: a second name of res5's weights
    assert len([k for k in converted["model"] if not k.startswith(shared_res5)]) == len(state)  # each key lands once
    meta = converted["meta"]
    assert meta["config_overrides"]["model.backbone.style"] == "caffe"  # MSRA's R-50
    assert meta["config_overrides"]["model.input_format"] == "BGR"
    assert len(meta["class_names"]) == num_classes(family) and meta["class_names"][0] == "person"
    cfg = load_config(config)
    detector = build_detector(cfg, converted, overrides=quick(cfg), source=src)  # strict
    run_once(detector, family)


DETECTRON_ROWS = {  # Detectron model zoo row -> (family, detzoo config, ResNet depth / groups / width per group)
    "rpn_R-50-FPN": ("rpn", "rpn_r50_caffe_fpn_1x_coco", (50, 1, 64)),
    "rpn_R-50-C4": ("rpn_c4", "rpn_r50_caffe_c4_1x_coco", (50, 1, 64)),
    "fast_rcnn_R-50-FPN": ("fast", "fast_rcnn_r50_caffe_fpn_1x_coco", (50, 1, 64)),
    "e2e_faster_rcnn_R-50-C4": ("faster_c4", "faster_rcnn_r50_caffe_c4_1x_coco", (50, 1, 64)),
    "e2e_mask_rcnn_R-50-C4": ("mask_c4", "mask_rcnn_r50_caffe_c4_1x_coco", (50, 1, 64)),
    "e2e_mask_rcnn_R-50-FPN": ("mask", "mask_rcnn_r50_caffe_fpn_1x_coco", (50, 1, 64)),
    "e2e_keypoint_rcnn_R-50-FPN": ("keypoint", "keypoint_rcnn_r50_caffe_fpn_1x_coco", (50, 1, 64)),
    "e2e_faster_rcnn_X-101-64x4d-FPN": ("faster", "faster_rcnn_x101_64x4d_fpn_1x_coco", (101, 64, 4)),  # res4_22
    "retinanet_R-50-FPN": ("retinanet", "retinanet_r50_caffe_fpn_1x_coco", (50, 1, 64)),
}


@pytest.mark.parametrize("row", list(DETECTRON_ROWS))
def test_detectron_checkpoint_lands_and_runs(row, tmp_path):
    family, config, resnet = DETECTRON_ROWS[row]
    blobs = fill(c2_layout(family, *resnet))
    src = write_detectron(tmp_path / "model_final.pkl", blobs)
    converted = detectron.convert(load_checkpoint(src))
    # every blob lands once, an affine channel (2 blobs) as a frozen BN (4 entries), except
    # SGD momentum, the ImageNet classifier, the fixed keypoint upsampling and the unused res5
    # of an R-50-C4 RPN (Detectron keeps its initialisation's blobs)
    dropped = re.compile(r"_momentum$|^pred_|^kps_score_[wb]$" + ("|^res5_" if family == "rpn_c4" else ""))
    kept = [k for k in blobs if not dropped.search(k)]
    shared_res5 = ("roi_heads.mask.head.0.", "roi_heads.keypoint.head.0.")
    landed = [k for k in converted["model"] if not k.startswith(shared_res5)]
    assert len(landed) == len(kept) + 2 * sum(k.endswith("_bn_s") for k in kept)
    meta = converted["meta"]["config_overrides"]
    assert meta["model.backbone.style"] == ("pytorch" if resnet[1] > 1 else "caffe")  # STRIDE_1X1 False for ResNeXt
    assert meta["model.pixel_mean"] == [102.9801, 115.9465, 122.7717]
    if family not in ("rpn", "rpn_c4", "retinanet"):
        assert meta["model.roi_heads.pooler.aligned"] is False
    if family != "fast":
        assert meta["model.dense_head.anchor_generator.offset"] == 0.5
    cfg = load_config(config)
    detector = build_detector(cfg, converted, overrides=quick(cfg), source=src)  # strict
    run_once(detector, family)


# ---------------------------------------------------------------------------------------
# Values land where they belong


def cell_anchors(sizes, ratios, stride: int) -> torch.Tensor:
    """detzoo's anchors at a level's first location (offset 0: its cell anchors)."""
    return AnchorGenerator(sizes=[sizes], aspect_ratios=ratios, strides=[stride])((stride, stride), [(1, 1)], "cpu")[0]


def d2_cell_anchors(sizes, ratios) -> torch.Tensor:
    """detectron2's ``DefaultAnchorGenerator.generate_cell_anchors``: size-major."""
    cells = []
    for size in sizes:
        for ratio in ratios:
            w = math.sqrt(size**2 / ratio)
            cells.append([-w / 2, -ratio * w / 2, w / 2, ratio * w / 2])
    return torch.tensor(cells)


def test_detectron2_retinanet_anchor_channels_follow_their_anchors():
    """Each detzoo anchor gets the output channels detectron2 trained for the same box."""
    state = fill(d2_layout("retinanet"))
    state["head.cls_score.bias"] = torch.arange(9.0).repeat_interleave(80)  # channel a*80+k holds anchor a
    state["head.bbox_pred.bias"] = torch.arange(9.0).repeat_interleave(4)
    model = detectron2.convert({"model": state})["model"]
    sizes = load_config("retinanet_r50_caffe_fpn_1x_coco")["model"]["dense_head"]["anchor_generator"]["sizes"][0]
    ours = cell_anchors(sizes, [0.5, 1.0, 2.0], 8)
    source = model["dense_head.head.cls_logits.bias"].view(9, 80)[:, 0].long()
    assert source.tolist() != list(range(9))  # reordered
    assert torch.equal(model["dense_head.head.cls_logits.bias"].view(9, 80), source[:, None].float().expand(9, 80))
    assert torch.equal(model["dense_head.head.deltas.bias"].view(9, 4)[:, 0].long(), source)
    theirs = d2_cell_anchors(sizes, [0.5, 1.0, 2.0])
    torch.testing.assert_close(ours, theirs[source], rtol=0, atol=1e-3)


def test_detectron_values_move_to_detzoo_conventions():
    """Background first -> last and its deltas / mask logits dropped; affine channels as
    frozen BN with mean 0, variance 1 - eps; the C4 RPN's anchors, ratio-major in
    Detectron (``generate_anchors``: each ratio, then each size), keep their channels; res5
    shared by the C4 box and mask heads."""
    blobs = fill(c2_layout("mask_c4"))
    blobs["rpn_cls_logits_b"] = torch.arange(15.0)  # channel a holds Detectron's anchor a
    model = detectron.convert({"blobs": {k: v.numpy() for k, v in blobs.items()}})["model"]
    cls = model["roi_heads.predictor.cls_score.weight"]
    assert torch.equal(cls[-1], blobs["cls_score_w"][0]) and torch.equal(cls[:-1], blobs["cls_score_w"][1:])
    assert torch.equal(model["roi_heads.predictor.bbox_pred.weight"], blobs["bbox_pred_w"][4:])
    assert torch.equal(model["roi_heads.mask.head.1.predictor.weight"], blobs["mask_fcn_logits_w"][1:])
    assert torch.equal(model["backbone.layer1.0.bn2.weight"], blobs["res2_0_branch2b_bn_s"])
    assert not model["backbone.bn1.running_mean"].any()
    assert torch.equal(model["backbone.bn1.running_var"], torch.full((64,), 1 - 1e-5))
    assert torch.equal(model["roi_heads.mask.head.0.2.conv3.weight"], blobs["res5_2_branch2c_w"])
    assert torch.equal(model["roi_heads.box_head.res5.2.conv3.weight"], blobs["res5_2_branch2c_w"])
    # frozen BN with these statistics is the affine map y = s x + b
    bn = build_norm("FrozenBN", 64)
    bn.load_state_dict({k.removeprefix("backbone.bn1."): v for k, v in model.items() if k.startswith("backbone.bn1.")})
    x = torch.randn(1, 64, 4, 4)
    expected = x * blobs["res_conv1_bn_s"].view(1, -1, 1, 1) + blobs["res_conv1_bn_b"].view(1, -1, 1, 1)
    torch.testing.assert_close(bn(x), expected, rtol=1e-5, atol=1e-5)
    # detzoo's anchor j (config sizes x ratios) is Detectron's anchor a = ratio * 5 + size
    anchor_cfg = load_config("mask_rcnn_r50_caffe_c4_1x_coco")["model"]["dense_head"]["anchor_generator"]
    sizes, ratios = anchor_cfg["sizes"][0], anchor_cfg["aspect_ratios"]
    ours = cell_anchors(sizes, ratios, 16)
    source = model["dense_head.head.objectness.bias"].long()
    wh = ours[:, 2:] - ours[:, :2]
    torch.testing.assert_close(wh[:, 1] / wh[:, 0], torch.tensor(ratios)[source // len(sizes)])
    torch.testing.assert_close(wh.prod(1).sqrt(), torch.tensor(sizes, dtype=torch.float32)[source % len(sizes)])


# ---------------------------------------------------------------------------------------
# Pixel formats: the same caffe-style weights, BGR (detectron2) or RGB (torchvision layout)


# caffe-style pixels are not normalised (features in the hundreds): small box deltas keep the
# random model's boxes inside the image and away from the clamps, class scores in (0.05, 1)
GAINS = {"cls_score": 0.02, "bbox_pred|anchor_deltas": 0.001}


def test_detectron2_bgr_checkpoint_equals_its_weights_in_torchvision_rgb_layout(tmp_path):
    """A detectron2 Faster R-CNN of a caffe-style (BGR, mean-subtracted) R-50, and the same
    weights written in torchvision's layout for RGB pixels scaled by 1/255 and normalised
    by torchvision's mean and std: the first conv's input channels reversed and multiplied
    by 255 x std, background moved first with zero deltas. Converted by their converters,
    with the conventions other than the pixel format made equal, they give the same
    detections."""
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    state = fill(d2_layout("faster"), gains=GAINS)
    ours = detectron2.convert(load_checkpoint(write_detectron2(tmp_path / "model_final.pkl", state)))
    d2_name = detectron2.rename_all({k: k for k in state})  # detzoo name -> detectron2's
    pixels = tv_converter.PIXELS
    std = torch.tensor(pixels["model.pixel_std"]) * 255.0
    tv_state = {}
    for key in fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=81).state_dict():
        if key.endswith("num_batches_tracked"):
            continue
        value = state[d2_name[rename(key, tv_converter.RENAMES)]]
        if key == "backbone.body.conv1.weight":
            value = value.flip(1) * std.view(1, 3, 1, 1)
        elif key.startswith("roi_heads.box_predictor.cls_score."):
            value = torch.cat([value[-1:], value[:-1]])
        elif key.startswith("roi_heads.box_predictor.bbox_pred."):
            value = torch.cat([torch.zeros_like(value[:4]), value])
        tv_state[key] = value
    theirs = tv_converter.convert(tv_state)
    assert theirs["meta"]["config_overrides"]["model.input_format"] == "RGB"
    theirs["meta"]["config_overrides"] = {
        **{k: v for k, v in ours["meta"]["config_overrides"].items() if k not in pixels},
        **{k: theirs["meta"]["config_overrides"][k] for k in pixels},
    }
    config = load_config("faster_rcnn_r50_caffe_fpn_1x_coco")
    bgr, rgb = (build_detector(config, c, overrides=SMALL) for c in (ours, theirs))
    total = 0
    for a, b in zip(bgr.predict(IMAGES[:2]), rgb.predict(IMAGES[:2])):
        assert len(a["boxes"]) == len(b["boxes"])
        np.testing.assert_array_equal(a["labels"], b["labels"])
        np.testing.assert_allclose(a["boxes"], b["boxes"], rtol=0, atol=1e-2)
        np.testing.assert_allclose(a["scores"], b["scores"], rtol=0, atol=1e-3)
        total += len(a["boxes"])
    assert total >= 10, "too few detections for a meaningful comparison"
    # without the channel reversal the same weights see another image
    tv_state["backbone.body.conv1.weight"] = tv_state["backbone.body.conv1.weight"].flip(1)
    rgb.model.load_state_dict(tv_converter.convert(tv_state)["model"])
    a, c = bgr.predict(IMAGES[0])[0], rgb.predict(IMAGES[0])[0]
    assert len(a["boxes"]) != len(c["boxes"]) or not np.allclose(a["boxes"], c["boxes"], atol=1e-2)


# ---------------------------------------------------------------------------------------
# Safe pickles and errors


class RunsCode:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch.load's, via load_model
@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(protocol, tmp_path):
    marker = tmp_path / "marker"
    src = tmp_path / "model_final.pkl"
    src.write_bytes(pickle.dumps({"blobs": {"conv1_w": np.zeros(3)}, "x": RunsCode(marker)}, protocol=protocol))
    for load in (load_pickle, load_checkpoint):
        refused = rf"{re.escape(str(src))} was refused: .* detzoo will not run \(global (posix|os)\.system\)"
        with pytest.raises(CheckpointError, match=refused):
            load(src)
    with pytest.raises(CheckpointError, match=re.escape(str(src))):  # torch's weights-only unpickler refuses it too
        detzoo.load_model("faster_rcnn_r50_fpn_1x_coco", checkpoint=src)
    assert not marker.exists()


def test_pickles_of_numpy_and_plain_containers_load_at_every_protocol(tmp_path):
    from collections import OrderedDict

    data = {"model": OrderedDict(w=np.arange(6, dtype=np.float32).reshape(2, 3)), "s": np.float64(2.5), "tags": {"a"}}
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        (tmp_path / "x.pkl").write_bytes(pickle.dumps(data, protocol=protocol))
        loaded = load_pickle(tmp_path / "x.pkl")
        np.testing.assert_array_equal(loaded["model"]["w"], data["model"]["w"])
        assert loaded["s"] == 2.5 and loaded["tags"] == {"a"}
    (tmp_path / "cut.pkl").write_bytes(pickle.dumps(data)[:50])
    with pytest.raises(CheckpointError, match="cut.pkl could not be read as a pickle"):
        load_pickle(tmp_path / "cut.pkl")


def test_detectron2_pixel_format_follows_the_backbone_initialisation():
    """MSRA's R-50 (caffe style, BGR, std 1) unless the backbone is a ResNeXt (FAIR's: pytorch
    style, BGR, a std) or the checkpoint's pixel buffers say torchvision's (RGB)."""
    state = fill(d2_layout("retinanet"))
    assert detectron2.convert({"model": state})["meta"]["config_overrides"] == {
        **detectron2.INITS["msra"], "model.dense_head.num_classes": 80}
    resnext = detectron2.convert({"model": fill(d2_layout("retinanet", groups=32, width_per_group=4))})
    assert resnext["meta"]["config_overrides"]["model.pixel_std"] == [57.375, 57.12, 58.395]
    assert resnext["meta"]["config_overrides"]["model.backbone.style"] == "pytorch"
    buffers = {"pixel_mean": torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1),
               "pixel_std": torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)}
    rgb = detectron2.convert({"model": {**state, **buffers}})["meta"]["config_overrides"]
    assert rgb["model.input_format"] == "RGB" and rgb["model.backbone.style"] == "pytorch"
    with pytest.raises(ValueError, match="pixel_mean .* match backbone initialisation 'torchvision', not 'msra'"):
        detectron2.convert({"model": {**state, **buffers}}, init="msra")
    with pytest.raises(ValueError,
                       match="unknown detectron2 backbone initialisation 'caffe'; valid: msra, fair, torch"):
        detectron2.convert({"model": state}, init="caffe")


def test_unknown_keys_and_inconsistent_checkpoints_are_errors_naming_them():
    state = fill(d2_layout("retinanet"))
    with pytest.raises(ValueError,
                       match=r"1 detectron2 checkpoint key\(s\) have no detzoo counterpart: roi_heads\.foo\."):
        detectron2.convert({"model": {**state, "roi_heads.foo.weight": torch.zeros(1)}})
    with pytest.raises(ValueError, match=r"no detzoo counterpart: head\.cls_subnet\.1\.weight"):  # a norm in the tower
        detectron2.convert({"model": {**state, "head.cls_subnet.1.weight": torch.zeros(256)}})
    blobs = fill(c2_layout("keypoint"))
    with pytest.raises(ValueError, match=r"Detectron checkpoint key\(s\) have no detzoo counterpart: foo_w"):
        detectron.convert({"blobs": {**blobs, "foo_w": torch.zeros(1)}})
    with pytest.raises(ValueError, match="kps_score_w is not the fixed bilinear x2 upsampling"):
        detectron.convert({"blobs": {**blobs, "kps_score_w": torch.ones(17, 17, 4, 4)}})
    with pytest.raises(ValueError, match="'cfg' is a str, not an array of numbers"):
        detectron.convert({"blobs": {**blobs, "cfg": "MODEL: ..."}})
