"""Config -> model validation, and the detzoo command line end to end on synthetic data."""

import copy
import functools
import json
import re

import pytest

import detzoo
from detzoo.backbones.resnet import ResNet
from detzoo.cli import main
from detzoo.config import ConfigError, apply_overrides, load_config
from detzoo.data.synthetic import data_overrides
from detzoo.detectors.build import build_model

TINY = "tests/configs/tiny_faster_rcnn.py"


def test_misspelled_model_key_names_the_key_and_suggests_the_right_one():
    cfg = load_config("faster_rcnn_r50_fpn_1x_coco")
    bad = dict(cfg["model"], dense_head=dict(cfg["model"]["dense_head"], nms_thres=0.5))
    with pytest.raises(ConfigError, match=r"model\.dense_head\.nms_thres.*did you mean 'nms_thresh'"):
        build_model(bad)


def test_derived_values_may_not_be_set():
    cfg = load_config("faster_rcnn_r50_fpn_1x_coco")
    bad = dict(cfg["model"], neck=dict(cfg["model"]["neck"], in_channels={"c2": 3}))
    with pytest.raises(ConfigError, match=r"model\.neck\.in_channels is derived"):
        build_model(bad)


@pytest.mark.parametrize("slot, path, valid", [
    ("backbone", ("backbone",), "'ResNet'"),
    ("neck", ("neck",), "'FPN', 'NASFPN', 'FPG'"),
    ("top_block", ("neck", "top_block"), "'maxpool', 'p6p7'"),
    ("dense_head", ("dense_head",), "'rpn', 'retina'"),
    ("box_head", ("roi_heads", "box_head"), "'convfc', 'res5'"),
])
def test_every_slot_names_its_unknown_or_missing_type_and_the_valid_ones(slot, path, valid):
    model = load_config("faster_rcnn_r50_fpn_1x_coco")["model"]
    dotted = ".".join(("model", *path))

    def with_type(kind):
        cfg = copy.deepcopy(model)
        section = functools.reduce(dict.__getitem__, path, cfg)
        section.pop("type", None)
        section.update({} if kind is None else {"type": kind})
        return cfg

    with pytest.raises(ConfigError, match=rf"^{re.escape(dotted)}\.type: unknown {slot} type 'Nope'; valid: {valid}$"):
        build_model(with_type("Nope"))
    if slot == "backbone":  # the one backbone is the default
        assert all(isinstance(build_model(with_type(kind)).backbone, ResNet) for kind in (None, "ResNet"))
    else:
        with pytest.raises(ConfigError, match=rf"^{re.escape(dotted)}\.type is not set; valid: {valid}$"):
            build_model(with_type(None))


def test_channel_counts_flow_from_the_producing_module():
    cfg = apply_overrides(load_config("faster_rcnn_r50_fpn_1x_coco"), ["model.neck.out_channels=64",
                                                                       "model.backbone.depth=18"])
    model = build_model(cfg["model"])
    assert model.dense_head.head.conv.in_channels == 64
    assert model.roi_heads.box_head.fcs[0].in_features == 64 * 7 * 7
    assert model.neck.lateral_convs[0][0].in_channels == 64  # ResNet-18's c2


@pytest.mark.parametrize("name, proposes", [("rpn_r50_fpn_1x_coco", True), ("retinanet_r50_fpn_1x_coco", False),
                                             ("mask_rcnn_r50_fpn_1x_coco", False)])
def test_a_model_says_whether_it_generates_proposals(name, proposes):
    cfg = apply_overrides(load_config(name), ["model.backbone.depth=18"])
    model = build_model(cfg["model"])
    assert model.is_proposal_generator == proposes == (model.outputs == ("proposals",))


def test_cli_synth_train_test_infer(tmp_path):
    data = tmp_path / "synth"
    assert main(["data", "synth", "--out", str(data / "train"), "--num-images", "8", "--size", "64"]) == 0
    assert main(["data", "synth", "--out", str(data / "val"), "--num-images", "4", "--size", "64", "--seed", "1"]) == 0
    overrides = [*data_overrides(data), "schedule={'iters': 4, 'steps': (3,)}"]
    sets = [arg for o in overrides for arg in ("--set", o)]
    work = tmp_path / "work"
    assert main(["train", TINY, "--work-dir", str(work), *sets]) == 0
    ckpt = str(work / "model_final.pth")

    results = tmp_path / "results.json"
    assert main(["test", TINY, ckpt, "--out", str(results), *sets]) == 0
    dets = json.loads(results.read_text())
    val = json.loads((data / "val/annotations.json").read_text())
    assert {d["image_id"] for d in dets} <= {im["id"] for im in val["images"]}
    assert {d["category_id"] for d in dets} <= {c["id"] for c in val["categories"]}
    assert all(len(d["bbox"]) == 4 for d in dets)

    images = sorted((data / "val/images").glob("*.png"))[:2]
    out = tmp_path / "drawn"
    assert main(["infer", TINY, ckpt, *map(str, images), "--out", str(out), "--score-thresh", "0.0", *sets]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == sorted(p.name for p in images)
    assert set(json.loads((out / "predictions.json").read_text())) == set(map(str, images))


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"detzoo {detzoo.__version__}\n"
    assert re.fullmatch(r"\d+\.\d+\.\d+", detzoo.__version__)


def test_cli_reports_bad_override_without_traceback(capsys):
    assert main(["train", TINY, "--set", "optim.lrr=0.1"]) == 2
    assert "did you mean 'lr'" in capsys.readouterr().err
