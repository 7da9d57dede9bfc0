"""Every config under detzoo/configs/ (the ``_base_`` pieces aside), one test id each:

* its file name follows REFERENCE.md's scheme
  ``{model}_{backbone}[_caffe]_{neck}[_{norm}][_{extras}]_{schedule}_{dataset}`` and agrees
  with what the file builds (directory, backbone, caffe style, neck, branches, schedule, data);
* its model builds, trains one iteration and runs inference on two synthetic 64 x 64 images,
  after narrow stand-in widths (stem 16, 16-channel FPN and heads) so the whole zoo runs on a
  CPU in seconds. The stand-ins keep every structural choice of the config: depth, groups,
  style, levels, anchors, box head type, branches.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from detzoo.config import apply_overrides, load_config, merge
from detzoo.data.build import DATA_KEYS, SPLIT_KEYS
from detzoo.detectors.build import build_model
from detzoo.engine.schedule import resolve_schedule
from detzoo.structures import Instances

CONFIG_ROOT = Path(__file__).resolve().parents[1] / "detzoo" / "configs"
CONFIGS = sorted(p for p in CONFIG_ROOT.rglob("*.py") if "_base_" not in p.relative_to(CONFIG_ROOT).parts)
# detzoo/configs/demo/ holds runnable examples, not zoo models: they build and train here but
# are exempt from the zoo's naming scheme.
ZOO = [p for p in CONFIGS if p.parent.name != "demo"]


def _id(path: Path) -> str:
    return str(path.relative_to(CONFIG_ROOT).with_suffix(""))


NAME = re.compile(
    r"""^(?P<model>rpn|fast_rcnn|faster_rcnn|fast_mask_rcnn|mask_rcnn|fast_keypoint_rcnn|keypoint_rcnn|retinanet)
    _(?P<backbone>r(?P<rdepth>18|34|50|101|152)|x(?P<xdepth>50|101|152)_(?P<groups>\d+)x(?P<width>\d+)d)
    (?P<caffe>_caffe)?
    _(?P<neck>fpn|c4|dc5|nasfpn|fpg(?:-chn\d+)?)
    (?:_(?P<norm>gn-all|gn_ws-all))?
    (?P<extras>(?:_(?!caffe_)[a-z][a-z0-9]*(?:-[a-z0-9]+)*)*?)
    _(?P<schedule>1x|2x|3x|s1x|\d+e|\d+_\d+_\d+e)
    _(?P<dataset>coco)$""",
    re.X,
)
# REFERENCE.md "Config names": one example per seed family; the scheme must accept them all.
REFERENCE_EXAMPLES = [
    "rpn_r50_caffe_c4_1x_coco",
    "rpn_r50_fpn_person_1x_coco",
    "fast_rcnn_r50_fpn_2x_coco",
    "fast_mask_rcnn_r50_fpn_2x_coco",
    "faster_rcnn_x101_64x4d_fpn_1x_coco",
    "mask_rcnn_r50_caffe_c4_2x_coco",
    "mask_rcnn_x152_32x8d_fpn_mstrain_s1x_coco",
    "keypoint_rcnn_r50_fpn_s1x_coco",
    "fast_keypoint_rcnn_r50_fpn_s1x_coco",
    "retinanet_r101_fpn_2x_coco",
    "retinanet_r50_nasfpn_crop640_50e_coco",
    "faster_rcnn_r50_fpg-chn128_crop640_50e_coco",
    "faster_rcnn_r50_fpn_gn_ws-all_1x_coco",
    "mask_rcnn_x50_32x4d_fpn_gn_ws-all_20_23_24e_coco",
    "mask_rcnn_r50_fpn_gn-all_2x_coco",
]
# the directory of each model kind (detzoo/configs/README.md)
FAMILY_DIR = {
    "rpn": "rpn",
    "fast_rcnn": "fast_rcnn",
    "faster_rcnn": "faster_rcnn",
    "fast_mask_rcnn": "mask_rcnn",
    "mask_rcnn": "mask_rcnn",
    "fast_keypoint_rcnn": "keypoint_rcnn",
    "keypoint_rcnn": "keypoint_rcnn",
    "retinanet": "retinanet",
}
CAFFE_PIXELS = dict(input_format="BGR", pixel_scale=1.0, pixel_mean=[103.53, 116.28, 123.675], pixel_std=[1.0] * 3)
KEYPOINT_ANNS = "person_keypoints"


@pytest.mark.parametrize("name", REFERENCE_EXAMPLES)
def test_naming_scheme_accepts_reference_examples(name):
    assert NAME.match(name), name


@pytest.mark.parametrize("name", ["faster_rcnn_r50_fpn_1x", "Faster_rcnn_r50_fpn_1x_coco", "faster_rcnn_r50_1x_coco",
                                  "faster_rcnn_r50_fpn_caffe_1x_coco", "mask_rcnn_x101_fpn_1x_coco"])
def test_naming_scheme_rejects_malformed_names(name):
    assert not NAME.match(name)


def test_config_names_are_unique():
    """``load_config(<bare name>)`` searches all of detzoo/configs/, the ``_base_`` pieces included."""
    stems = [p.stem for p in CONFIG_ROOT.rglob("*.py")]
    assert len(stems) == len(set(stems)), sorted(s for s in set(stems) if stems.count(s) > 1)


@pytest.mark.parametrize("path", ZOO, ids=_id)
def test_config_name_follows_the_scheme_and_matches_the_contents(path):
    m = NAME.match(path.stem)
    assert m, f"{path.stem} does not follow {{model}}_{{backbone}}[_caffe]_{{neck}}[_{{extras}}]_{{schedule}}_coco"
    cfg = load_config(path)
    model, data = cfg["model"], cfg["data"]
    kind = m["model"]
    extras = set(filter(None, m["extras"].split("_")))
    assert path.parent.name == FAMILY_DIR[kind]
    assert path.read_text().lstrip().startswith('"""'), "a zoo config documents its seed row(s) in a docstring"

    # backbone: depth / ResNeXt groups x width, and `_caffe` <=> caffe-style blocks with caffe pixels
    bb = model["backbone"]
    depth, groups, width = bb.get("depth", 50), bb.get("groups", 1), bb.get("width_per_group", 64)
    if m["rdepth"]:
        assert (depth, groups, width) == (int(m["rdepth"]), 1, 64)
    else:
        assert (depth, groups, width) == (int(m["xdepth"]), int(m["groups"]), int(m["width"]))
    style = bb.get("style", "pytorch")
    assert (style == "caffe") == bool(m["caffe"]), "_caffe in the name <=> backbone.style='caffe'"
    if style == "caffe":
        assert {k: model[k] for k in CAFFE_PIXELS} == CAFFE_PIXELS, "caffe-style weights take caffe pixels"

    # neck
    if m["neck"] == "c4":
        assert model["neck"] is None and bb["out_features"] == ["c4"]
        if model["dense_head"] is not None:
            assert model["dense_head"]["in_features"] == ["c4"]
        if model["roi_heads"] is not None:
            assert model["roi_heads"]["box_head"] == {"type": "res5"}
    else:
        assert model["neck"]["type"] == {"fpn": "FPN", "nasfpn": "NASFPN"}.get(m["neck"], "FPG")
        if m["neck"].startswith("fpg-chn"):  # the neck's width is set once, in the neck
            assert model["neck"]["out_channels"] == int(m["neck"][len("fpg-chn"):])

    # norm: gn-all / gn_ws-all put GroupNorm (+ weight standardisation) in the backbone,
    # the neck, a 4conv1fc box head and the mask head
    if m["norm"]:
        ws = m["norm"] == "gn_ws-all"
        box = model["roi_heads"]["box_head"]
        assert (bb["norm"], model["neck"]["norm"], box["norm"]) == ("GN",) * 3
        assert (box["num_convs"], box["num_fcs"]) == (4, 1)
        assert bb.get("conv_ws", False) == model["neck"].get("conv_ws", False) == box.get("conv_ws", False) == ws
        if model["roi_heads"].get("mask") is not None:
            head = model["roi_heads"]["mask"]["head"]
            assert head["norm"] == "GN" and head.get("conv_ws", False) == ws
    else:
        assert bb.get("norm", "FrozenBN") != "GN" and not bb.get("conv_ws", False)

    # model kind: which stages and branches exist
    roi = model["roi_heads"]
    assert (model["dense_head"] is None) == kind.startswith("fast_")
    assert kind.startswith("fast_") or model["dense_head"]["type"] == ("retina" if kind == "retinanet" else "rpn")
    assert (roi is None) == (kind in ("rpn", "retinanet"))
    if roi is not None:
        assert (roi.get("mask") is not None) == ("mask" in kind)
        assert (roi.get("keypoint") is not None) == ("keypoint" in kind)

    # data: proposals for Fast R-CNN come from an RPN config of the same backbone and neck
    assert set(data) <= set(DATA_KEYS)
    for split in ("train", "val"):
        assert set(data[split]) <= set(SPLIT_KEYS)
        if kind.startswith("fast_"):
            stem = Path(data[split]["proposals_file"]).stem
            rpn_name, _, suffix = stem.rpartition("_")
            assert suffix == f"{split}2017"
            rpn = NAME.match(f"{rpn_name}_coco")
            assert rpn and rpn["model"] == "rpn", stem
            assert (rpn["backbone"], rpn["caffe"], rpn["neck"]) == (m["backbone"], m["caffe"], m["neck"])
            assert (CONFIG_ROOT / "rpn" / f"{rpn_name}_coco.py").is_file(), f"no RPN config makes {stem}"
            assert ("person" in rpn["extras"]) == ("keypoint" in kind)
        else:
            assert data[split].get("proposals_file") is None
    person = KEYPOINT_ANNS in data["train"]["ann_file"]
    assert person == ("keypoint" in kind or "person" in extras)
    if not person:  # the keypoint dataset is always multi-scale (Detectron's keypoint recipe)
        assert ("mstrain" in extras) == (len(data["train_scales"]) > 1)

    # schedule
    assert cfg["schedule"] == m["schedule"]
    assert resolve_schedule(cfg["schedule"], iters_per_epoch=100, batch_size=16).max_iters > 0
    crop = "crop640" in extras  # NAS-FPN / FPG recipe: crop training at batch 64
    assert cfg["optim"]["base_batch_size"] == (64 if crop else 16)
    assert (data["crop_size"] is not None) == crop
    assert set(cfg) <= {"model", "data", "optim", "schedule", "runtime"}


# ---------------------------------------------------------------------------------------
# Build, one training iteration, one inference on narrow stand-ins of every config


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: one intra-op thread is as fast and does not stall when other
    jobs load the machine (the whole file takes about 15 s on 2 cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def narrow(cfg: dict) -> dict:
    """Stand-in widths: stem 16 (ResNeXt 64x4d needs >= 16 for a non-zero bottleneck width),
    16-channel necks and head convs, 32-wide fc head (GN models: 32 everywhere, GN's group
    count); score threshold 0 so that inference reaches the mask and keypoint branches of
    an untrained model."""
    model = cfg["model"]
    width = 32 if model["backbone"].get("norm") == "GN" else 16
    new: dict = {"backbone": {"stem_width": width}}
    sets = []
    if model["neck"] is not None:
        sets.append(f"model.neck.out_channels={width}")
    if model["dense_head"] is not None and model["dense_head"]["type"] == "retina":
        sets.append("model.dense_head.score_thresh=0.0")
        sets.append(f"model.dense_head.head.conv_dim={width}")
    roi = model["roi_heads"]
    if roi is not None:
        sets.append("model.roi_heads.score_thresh=0.0")
        sets.append("model.roi_heads.batch_size_per_image=64")
        if "fc_dim" in roi["box_head"]:
            sets.append("model.roi_heads.box_head.fc_dim=32")
        if "conv_dim" in roi["box_head"]:
            sets.append(f"model.roi_heads.box_head.conv_dim={width}")
        for branch in ("mask", "keypoint"):
            if roi.get(branch) is not None and "conv_dim" in roi[branch]["head"]:
                sets.append(f"model.roi_heads.{branch}.head.conv_dim={width}")
    # stem_width is not a key of the config files: merge it in (apply_overrides sets existing keys only)
    return apply_overrides(merge(cfg, {"model": new}), sets)


def synthetic_batch(num_classes: int, with_masks: bool, with_keypoints: bool):
    """Two normalised 3 x 64 x 64 images with two objects each, and proposals around them."""
    g = torch.Generator().manual_seed(0)
    images = [torch.randn(3, 64, 64, generator=g) for _ in range(2)]
    boxes = [torch.tensor([[6.0, 8.0, 38.0, 50.0], [24.0, 20.0, 60.0, 58.0]]),
             torch.tensor([[10.0, 4.0, 54.0, 30.0], [2.0, 30.0, 30.0, 62.0]])]
    targets, proposals = [], []
    for b in boxes:
        n = len(b)
        masks = keypoints = None
        if with_masks:
            masks = torch.zeros(n, 64, 64, dtype=torch.uint8)
            for i, (x0, y0, x1, y1) in enumerate(b.round().long().tolist()):
                masks[i, y0:y1, x0:x1] = 1
        if with_keypoints:
            t = torch.rand(n, 17, 2, generator=g)
            xy = b[:, None, :2] + t * (b[:, None, 2:] - b[:, None, :2])
            keypoints = torch.cat([xy, torch.full((n, 17, 1), 2.0)], dim=2)
        labels = torch.arange(n) % num_classes
        targets.append(Instances(boxes=b, labels=labels, masks=masks, keypoints=keypoints))
        jitter = b + torch.randn(8, n, 4, generator=g) * 3
        props = torch.cat([b, jitter.reshape(-1, 4), torch.tensor([[0.0, 0.0, 64.0, 64.0]])]).clamp(0, 64)
        proposals.append(Instances(boxes=props, labels=torch.zeros(len(props), dtype=torch.int64),
                                   scores=torch.linspace(1.0, 0.1, len(props))))
    return images, targets, proposals


@pytest.mark.parametrize("path", CONFIGS, ids=_id)
def test_config_builds_trains_one_iteration_and_infers(path):
    torch.manual_seed(0)
    cfg = narrow(load_config(path))
    model = build_model(cfg["model"])
    roi, dense = cfg["model"]["roi_heads"], cfg["model"]["dense_head"]
    with_masks = roi is not None and roi.get("mask") is not None
    with_keypoints = roi is not None and roi.get("keypoint") is not None
    num_classes = (roi or dense).get("num_classes", 1)
    images, targets, proposals = synthetic_batch(num_classes, with_masks, with_keypoints)
    given = {"proposals": proposals} if model.needs_proposals else {}

    model.train()
    losses = model(images, targets, **given)
    assert losses and all(torch.isfinite(v) for v in losses.values()), losses
    dense_type = None if dense is None else dense["type"]
    assert ("loss_rpn_cls" in losses) == (dense_type == "rpn")
    assert ("loss_retina_cls" in losses) == (dense_type == "retina")
    assert ("loss_cls" in losses) == (roi is not None)
    assert ("loss_mask" in losses) == with_masks
    assert ("loss_keypoint" in losses) == with_keypoints
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    optimizer.zero_grad()
    sum(losses.values()).backward()
    # an untrained deep net on frozen (identity) BN has huge activations and gradients: clip
    # them so that the single step stays a step and inference sees a usable model
    grad_norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
    assert torch.isfinite(grad_norm) and grad_norm > 0
    optimizer.step()

    model.eval()
    with torch.no_grad():
        results = model(images, original_sizes=[(128, 96), (64, 64)], **given)
    assert len(results) == 2
    for r in results:
        assert r.boxes.shape[1] == 4 and len(r) > 0
        assert r.scores is not None and torch.isfinite(r.boxes).all()
        if with_masks:
            assert r.masks is not None and r.masks.shape[0] == len(r)
        if with_keypoints:
            assert r.keypoints is not None and r.keypoints.shape[1:] == (17, 3)
    assert results[0].masks is None or results[0].masks.shape[-2:] == (128, 96)
