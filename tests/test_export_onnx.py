"""`detzoo export onnx` and `detzoo infer --backend onnxruntime`: onnxruntime runs every
exported family as detzoo's PyTorch model does.

Faster, Mask (FPN and C4) and Keypoint R-CNN (the narrow test configs) and RetinaNet with
FPN, NAS-FPN and FPG (ResNet-18 at 1/8 width, 32-channel necks and heads), from seeded
random weights: each checkpoint is exported by the command line from a trace at 480 x 640,
then run by onnxruntime on two real COCO images of other sizes (resized to 200 x 391 and
267 x 200, padded to different sizes), and must give the PyTorch model's detections: the
same number, equal labels and class names, boxes within 1e-2 px, scores within 1e-3, pasted
masks with IoU >= 0.99, keypoints within 1e-2 px (and keypoint scores within 1e-3)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import detzoo
from detzoo.cli import main
from detzoo.data.images import read_image
from detzoo.engine.checkpoint import save_checkpoint

pytest.importorskip("onnxruntime")
from detzoo.export.onnx import load_onnx_detector  # noqa: E402  (after the skip)
from detections import assert_same_detections  # noqa: E402

ROOT = Path(__file__).parent.parent
IMAGES = [ROOT / "tests/data/coco/images/000000000338.jpg", ROOT / "tests/data/coco/images/000000000446.jpg"]
DATA = ["data.test_scale=200", "data.max_size=400"]
NARROW = [
    "model.backbone={'depth': 18, 'stem_width': 8, 'norm': 'BN', 'frozen_stages': 0}",
    "model.neck.out_channels=32",
    "model.dense_head.head.conv_dim=32",
]
FAMILIES = {
    "faster": ("tests/configs/tiny_faster_rcnn.py", []),
    "mask": ("tests/configs/tiny_mask_rcnn.py", []),
    "mask_c4": ("tests/configs/tiny_mask_rcnn_c4.py", []),
    "keypoint": ("tests/configs/tiny_keypoint_rcnn.py", []),
    "retinanet_fpn": ("benchmarks/configs/retinanet_r18_fpn_synth.py", NARROW),
    "retinanet_nasfpn": ("benchmarks/configs/retinanet_r18_nasfpn_synth.py", NARROW),
    "retinanet_fpg": ("detzoo/configs/retinanet/retinanet_r50_fpg_crop640_50e_coco.py", NARROW),
}
# a checkpoint's recorded conventions reach the ONNX side too (here: mmdetection's resize)
CONVENTIONS = {"faster": {"data.resize": "mmdet"}}


def conditioned_checkpoint(config: str, overrides: list[str], path: Path, conventions: dict) -> Path:
    """Seeded random weights with many detections whose scores are spread (no ties in the
    order): the RoI classifier's weights x 3; RetinaNet's head convs at variance 1 / fan-in
    (the prediction convs x 0.3, below saturation) and its class prior at -3.0, scores around
    the 0.05 threshold, so that the number of candidates above it varies by level and image,
    from over the top-k to none (the data-dependent sizes the graph must follow)."""
    torch.manual_seed(0)
    detector = detzoo.load_model(str(ROOT / config), overrides=overrides)
    state = detector.model.state_dict()
    g = torch.Generator().manual_seed(0)
    if "roi_heads.predictor.cls_score.weight" in state:
        state["roi_heads.predictor.cls_score.weight"] *= 3.0
    else:
        for key, value in state.items():
            if key.startswith("dense_head.head.") and key.endswith(".weight") and value.dim() == 4:
                scale = 1.0 if "_convs." in key else 0.3
                value.copy_(torch.randn(value.shape, generator=g) / value[0].numel() ** 0.5 * scale)
        state["dense_head.head.cls_logits.bias"].fill_(-3.0)
    names = [f"thing{i}" for i in range(detector.model.num_classes)]
    save_checkpoint(path, {"model": state, "meta": {"class_names": names, "config_overrides": conventions}})
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """family -> (config, overrides, checkpoint, onnx file), each exported once."""
    root = tmp_path_factory.mktemp("onnx")
    cache = {}

    def export(family: str):
        if family not in cache:
            config, narrow = FAMILIES[family]
            overrides = narrow + DATA
            ckpt = conditioned_checkpoint(config, overrides, root / f"{family}.pth", CONVENTIONS.get(family, {}))
            onnx_file = root / f"{family}.onnx"
            sets = [arg for o in overrides for arg in ("--set", o)]
            assert main(["export", "onnx", str(ROOT / config), str(ckpt), "--out", str(onnx_file),
                         "--shape", "480", "640", *sets]) == 0
            cache[family] = (str(ROOT / config), overrides, ckpt, onnx_file)
        return cache[family]

    return export


def assert_same_predictions(ours: dict, theirs: dict) -> None:
    """``theirs`` (onnxruntime) against ``ours`` (PyTorch), as ``Detector.predict`` gives
    them: the same detections (``detections.assert_same_detections``), named alike."""
    assert sorted(ours) == sorted(theirs)
    names = dict(zip(ours["labels"].tolist(), ours["class_names"]))
    assert all(names.get(label, name) == name for label, name in zip(theirs["labels"].tolist(), theirs["class_names"]))
    assert_same_detections(*({k: v for k, v in d.items() if k != "class_names"} for d in (ours, theirs)))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_onnxruntime_gives_pytorch_detections(family, exported):
    config, overrides, ckpt, onnx_file = exported(family)
    pytorch = detzoo.load_model(config, ckpt, overrides=overrides)
    onnx = load_onnx_detector(config, onnx_file, overrides=overrides)
    resized = [tuple(onnx.transform(read_image(p))[0].shape[-2:]) for p in IMAGES]
    assert resized[0] != resized[1] and (480, 640) not in resized  # sizes the trace did not see
    total = 0
    for ours, theirs in zip(pytorch.predict(IMAGES), onnx.predict(IMAGES)):
        assert_same_predictions(ours, theirs)
        total += len(ours["boxes"])
    assert total >= 20, "too few detections for a meaningful comparison"


def test_infer_cli_onnxruntime_writes_what_pytorch_writes(exported, tmp_path):
    """``detzoo infer --backend onnxruntime``: the same drawn images and predictions.json
    (within the tolerances above) as the PyTorch backend (Keypoint R-CNN: a mask model's
    json holds every pixel of every mask)."""
    config, overrides, ckpt, onnx_file = exported("keypoint")
    sets = [arg for o in overrides for arg in ("--set", o)]
    images = list(map(str, IMAGES))
    for backend, weights in (("pytorch", ckpt), ("onnxruntime", onnx_file)):
        assert main(["infer", config, str(weights), *images, "--out", str(tmp_path / backend),
                     "--backend", backend, *sets]) == 0
        assert sorted(p.name for p in (tmp_path / backend).glob("*.png")) == sorted(p.stem + ".png" for p in IMAGES)
    ours, theirs = (json.loads((tmp_path / b / "predictions.json").read_text()) for b in ("pytorch", "onnxruntime"))
    assert list(ours) == list(theirs) == images
    for image in images:
        a, b = ({k: np.asarray(v) for k, v in p[image].items()} for p in (ours, theirs))
        a["class_names"], b["class_names"] = list(a["class_names"]), list(b["class_names"])
        assert_same_predictions(a, b)


@pytest.mark.parametrize("family, thresh", [("mask", "model.roi_heads.score_thresh"),
                                            ("retinanet_fpn", "model.dense_head.score_thresh")])
def test_no_detections_is_an_empty_result(family, thresh, tmp_path):
    """A graph whose every candidate falls below the score threshold: empty boxes, scores,
    labels (and (0, H, W) masks), as from PyTorch."""
    config, narrow = FAMILIES[family]
    overrides = narrow + DATA + [f"{thresh}=0.99"]
    ckpt = conditioned_checkpoint(config, overrides, tmp_path / "model.pth", {})
    assert main(["export", "onnx", str(ROOT / config), str(ckpt), "--out", str(tmp_path / "model.onnx"),
                 *[arg for o in overrides for arg in ("--set", o)]]) == 0
    (pred,) = load_onnx_detector(str(ROOT / config), tmp_path / "model.onnx", overrides=overrides).predict(IMAGES[:1])
    (ref,) = detzoo.load_model(str(ROOT / config), ckpt, overrides=overrides).predict(IMAGES[:1])
    assert len(ref["boxes"]) == 0 and sorted(pred) == sorted(ref)
    assert pred["boxes"].shape == (0, 4) and pred["scores"].shape == (0,) and pred["labels"].shape == (0,)
    if family == "mask":
        assert pred["masks"].shape == ref["masks"].shape == (0, 327, 640)


def test_bad_input_is_one_error_line(exported, tmp_path, capsys):
    config, overrides, ckpt, _ = exported("faster")
    out = tmp_path / "model.onnx"
    rpn = ROOT / "tests/configs/tiny_rpn.py"
    rpn_ckpt = tmp_path / "rpn.pth"
    save_checkpoint(rpn_ckpt, {"model": detzoo.load_model(rpn).model.state_dict()})
    cases = [
        (["export", "onnx", str(rpn), str(rpn_ckpt), "--out", str(out)], "not an RPN"),
        (["export", "onnx", config, str(ckpt), "--out", str(out), "--opset", "11"],
         "opset 11: the export needs 16 to 20"),
        (["infer", config, str(ckpt), str(IMAGES[0]), "--out", str(tmp_path), "--backend", "onnxruntime"],
         f"{ckpt} is not an ONNX model onnxruntime can load"),
        (["infer", config, str(tmp_path / "missing.onnx"), str(IMAGES[0]), "--out", str(tmp_path),
          "--backend", "onnxruntime"], "ONNX file not found"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"detzoo {argv[0]}: error: ") and message in err[0], err
    assert not out.exists()
