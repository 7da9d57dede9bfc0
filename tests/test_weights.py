"""Published weights by zoo name (detzoo.zoo.weights), `detzoo publish` and `detzoo verify`.

The "upstream" checkpoint is a torchvision Faster R-CNN built from torchvision's own classes
at a small size (ResNet-18, 32-channel FPN, 64-wide box head, 3 classes), saved as
torchvision saves state dicts under a published name ``<name>-<sha256[:8]>.pth``. A zoo
of its own (model index, metafile, config) under ``$DETZOO_CONFIG_ROOT`` points at it with
a ``file://`` URL; ``$DETZOO_CACHE`` is a temp folder. Nothing touches the network."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torchvision.models import resnet18
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops.misc import FrozenBatchNorm2d

import detzoo
from detzoo.cli import main
from detzoo.data.synthetic import data_overrides
from detzoo.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, sha256_file
from detzoo.zoo.converters import mmdet, torchvision
from detzoo.zoo.converters import convert_checkpoint

TESTS = Path(__file__).parent
IMAGE = sorted((TESTS / "data" / "coco" / "images").glob("*.jpg"))[0]
NAME = "tiny_tv_faster_rcnn"
# the tiny test config at the width of torchvision's ResNet-18 (its FPN and box head are as narrow)
CONFIG = f"""_base_ = {str(TESTS / "configs" / "tiny_faster_rcnn.py")!r}
model = dict(backbone=dict(stem_width=64, norm="FrozenBN"))
"""


@pytest.fixture(scope="module")
def upstream(tmp_path_factory) -> Path:
    """A torchvision-format state dict saved under its published name."""
    torch.manual_seed(0)
    body = resnet18(norm_layer=FrozenBatchNorm2d)
    backbone = BackboneWithFPN(body, {f"layer{i}": str(i - 1) for i in range(1, 5)}, [64, 128, 256, 512], 32)
    model = FasterRCNN(backbone, box_head=TwoMLPHead(32 * 7 * 7, 64), box_predictor=FastRCNNPredictor(64, 4))
    with torch.no_grad():  # random weights: scores spread enough to clear the 0.05 threshold
        model.roi_heads.box_predictor.cls_score.weight.mul_(50.0)
    staging = tmp_path_factory.mktemp("upstream") / "staging.pth"
    torch.save(model.state_dict(), staging)
    return staging.rename(staging.with_name(f"{NAME}-{sha256_file(staging)[:8]}.pth"))


def write_zoo(root: Path, models: dict[str, dict | None]) -> None:
    """A model index and one metafile under ``root`` listing ``models`` (name -> Weights or None),
    each with a config file of its name."""
    models_yaml = []
    for name, weights in models.items():
        (root / f"{name}.py").write_text(CONFIG)
        entry = {"Name": name, "In Collection": "Tiny", "Config": f"{name}.py",
                 "Metadata": {"Backbone": "R-18", "Style": "pytorch", "Lr schd": "1x", "Epochs": 12}}
        models_yaml.append({**entry, "Weights": weights} if weights else entry)
    collection = {"Name": "Tiny", "README": "tiny.md", "Paper": {"Title": "Tiny", "URL": "https://example.org"},
                  "Metadata": {"Training Data": "COCO", "Training Techniques": ["SGD"],
                               "Training Resources": "none", "Architecture": ["FPN"]}}
    (root / "metafile.yml").write_text(yaml.safe_dump({"Collections": [collection], "Models": models_yaml}))
    (root / "model-index.yml").write_text(yaml.safe_dump({"Import": ["metafile.yml"]}))


@pytest.fixture
def zoo(tmp_path, monkeypatch, upstream) -> dict[str, Path]:
    """A zoo whose NAME is served from ``server/`` by a file URL; an empty cache."""
    root, server, cache = tmp_path / "zoo", tmp_path / "server", tmp_path / "cache"
    root.mkdir()
    server.mkdir()
    served = Path(shutil.copy(upstream, server))
    write_zoo(root, {
        NAME: {"URL": served.as_uri(), "SHA256": served.name[-12:-4], "Format": "torchvision"},
        "tiny_no_weights": None,
    })
    monkeypatch.setenv("DETZOO_CONFIG_ROOT", str(root))
    monkeypatch.setenv("DETZOO_CACHE", str(cache))
    return {"root": root, "served": served, "cache": cache}


def set_weights(zoo: dict[str, Path], url: str) -> None:
    """Point NAME at another URL (its hash: the one in that URL's file name)."""
    write_zoo(zoo["root"], {NAME: {"URL": url, "SHA256": url[-12:-4], "Format": "torchvision"}})


def predict(detector: detzoo.api.Detector) -> dict:
    return detector.predict(IMAGE)[0]


def test_load_by_name_downloads_checks_converts_and_reuses_the_cache(zoo, tmp_path):
    detector = detzoo.load_model(NAME, pretrained=True)
    cached = zoo["cache"] / zoo["served"].name
    assert [p.name for p in zoo["cache"].iterdir()] == [cached.name]
    assert cached.read_bytes() == zoo["served"].read_bytes()
    # the same detections as `detzoo convert` of the same file loaded into the same config
    converted = tmp_path / "converted.pth"
    assert main(["convert", "--from", "torchvision", str(zoo["served"]), "--config", NAME,
                 "--out", str(converted)]) == 0
    ref = predict(detzoo.load_model(NAME, checkpoint=converted))
    ours = predict(detector)
    assert len(ref["boxes"]) > 0
    for key in ("boxes", "scores", "labels"):
        np.testing.assert_array_equal(ours[key], ref[key])
    # a second load reads the cached file: the server's copy is gone, the cache holds one file
    zoo["served"].unlink()
    again = detzoo.load_model(checkpoint=NAME)  # a zoo name in place of a checkpoint file
    np.testing.assert_array_equal(predict(again)["boxes"], ref["boxes"])
    assert [p.name for p in zoo["cache"].iterdir()] == [cached.name]


def test_a_hash_mismatched_download_is_refused_and_not_kept(zoo, capsys):
    wrong = zoo["served"].with_name(f"{NAME}-00000000.pth")
    zoo["served"].rename(wrong)
    set_weights(zoo, wrong.as_uri())
    actual = sha256_file(wrong)[:8]
    message = f"sha256 mismatch for {zoo['cache'] / wrong.name}: expected prefix 00000000, got {actual} (file removed)"
    with pytest.raises(CheckpointError, match=re.escape(message)):
        detzoo.load_model(NAME, pretrained=True)
    assert list(zoo["cache"].iterdir()) == []
    assert main(["infer", NAME, NAME, str(IMAGE), "--out", str(zoo["cache"] / "out")]) == 2
    assert capsys.readouterr().err == f"detzoo infer: error: {message}\n"
    assert list(zoo["cache"].iterdir()) == []


def test_unreachable_url_says_where_to_put_the_file_and_a_file_put_there_works(zoo, upstream, capsys, synth_data):
    zoo["served"].unlink()  # the server is gone
    url = zoo["served"].as_uri()
    target = zoo["cache"] / zoo["served"].name
    line = re.compile(rf"could not download {re.escape(url)} \(.+\); "
                      rf"download it and put it at {re.escape(str(target))}")
    with pytest.raises(CheckpointError, match=line):
        detzoo.load_model(NAME, pretrained=True)
    sets = [x for item in data_overrides(synth_data) for x in ("--set", item)]
    assert main(["test", NAME, NAME, *sets]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("detzoo test: error: ") and line.search(err)
    assert not target.exists()
    # offline: a file put at that path by hand is checked, then used
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"not the published file")
    assert main(["test", NAME, NAME, *sets]) == 2
    assert "sha256 mismatch" in capsys.readouterr().err and not target.exists()
    shutil.copy(upstream, target)
    assert main(["test", NAME, NAME, *sets]) == 0
    assert "bbox" in capsys.readouterr().out


def test_infer_by_name(zoo, tmp_path):
    out = tmp_path / "drawn"
    assert main(["infer", NAME, NAME, str(IMAGE), "--out", str(out), "--score-thresh", "0.0"]) == 0
    assert (out / f"{IMAGE.stem}.png").is_file()
    assert list(json.loads((out / "predictions.json").read_text())) == [str(IMAGE)]


def test_names_without_weights_or_converter_and_unknown_names_are_one_line_errors(zoo, capsys):
    no_weights = rf"zoo model tiny_no_weights has no published weights \({re.escape(str(zoo['root']))}"
    with pytest.raises(CheckpointError, match=no_weights):
        detzoo.load_model("tiny_no_weights", pretrained=True)
    with pytest.raises(FileNotFoundError, match=rf"checkpoint 'tiny_tv_faster_rcnm' is neither a file nor a zoo "
                                                rf"model: no model named .*did you mean '{NAME}'"):
        detzoo.load_model(NAME, checkpoint="tiny_tv_faster_rcnm")
    with pytest.raises(ValueError, match="no converter for 'caffe' checkpoints; "
                                         "detzoo converts torchvision, mmdet, detectron2, detectron$"):
        convert_checkpoint({}, "caffe")
    with pytest.raises(ValueError, match="takes a zoo model name and no checkpoint"):
        detzoo.load_model(NAME, checkpoint=NAME, pretrained=True)
    assert main(["infer", "tiny_no_weights", "tiny_no_weights", str(IMAGE), "--out", str(zoo["root"])]) == 2
    assert capsys.readouterr().err == (f"detzoo infer: error: zoo model tiny_no_weights has no published weights "
                                       f"({zoo['root'] / 'metafile.yml'} lists none)\n")


def test_convert_checkpoint_dispatches_by_format(upstream):
    state = load_checkpoint(upstream)
    bare, wrapped = convert_checkpoint(state, "torchvision"), convert_checkpoint({"model": state}, "torchvision")
    assert bare["meta"] == wrapped["meta"] == torchvision.convert(state)["meta"]
    assert all(torch.equal(bare["model"][k], wrapped["model"][k]) for k in bare["model"])
    mm = {"state_dict": {"roi_head.bbox_head.fc_cls.weight": torch.zeros(81, 8),
                         "roi_head.bbox_head.fc_cls.bias": torch.zeros(81)}, "meta": {}}
    assert convert_checkpoint(mm, "mmdet")["meta"] == mmdet.convert(mm)["meta"]
    assert convert_checkpoint(mm, "mmdet")["meta"]["config_overrides"]["model.roi_heads.num_classes"] == 80


def training_checkpoint(path: Path) -> None:
    save_checkpoint(path, {"model": {"w": torch.arange(6.0)}, "meta": {"class_names": ["a"]},
                           "optimizer": {"state": {}, "param_groups": []}, "scheduler": {"last_epoch": 3},
                           "iteration": 3})


def test_publish_writes_name_with_hash_and_drops_optimizer_state(tmp_path, capsys):
    src = tmp_path / "work_dirs" / "tiny_faster_rcnn" / "checkpoint.pth"
    training_checkpoint(src)
    assert main(["publish", str(src)]) == 0
    digest, printed = capsys.readouterr().out.split()
    published = Path(printed)
    assert published == src.parent / f"tiny_faster_rcnn-{digest[:8]}.pth" and sha256_file(published) == digest
    state = load_checkpoint(published)
    assert set(state) == {"model", "meta"} and torch.equal(state["model"]["w"], torch.arange(6.0))
    assert main(["publish", str(src), "--name", "release", "--out", str(tmp_path / "out")]) == 0
    renamed = tmp_path / "out" / published.name.replace("tiny_faster_rcnn", "release")
    assert Path(capsys.readouterr().out.split()[1]) == renamed
    save_checkpoint(tmp_path / "weights_only.pth", {"model": {}})
    assert main(["publish", str(tmp_path / "weights_only.pth")]) == 2
    assert "lacks keys ['meta']" in capsys.readouterr().err


def test_verify_checks_the_hash_in_the_name_or_the_given_one(tmp_path, capsys):
    src = tmp_path / "work" / "checkpoint.pth"
    training_checkpoint(src)
    assert main(["publish", str(src), "--name", "m"]) == 0
    digest, published = capsys.readouterr().out.split()
    assert main(["verify", published]) == 0
    assert capsys.readouterr().out == f"{published}: OK (sha256 {digest})\n"
    data = bytearray(Path(published).read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit
    Path(published).write_bytes(bytes(data))
    assert main(["verify", published]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"detzoo verify: error: sha256 mismatch for {published}: expected prefix {digest[:8]}, got ")
    assert err.count("\n") == 1
    flipped = sha256_file(published)
    assert main(["verify", published, "--sha256", flipped]) == 0
    assert main(["verify", published, "--sha256", digest]) == 2
    assert main(["verify", str(src)]) == 2
    assert "does not end with -<sha256[:8]>.pth; give the expected sha256" in capsys.readouterr().err
    assert main(["verify", published, "--sha256", "xyz"]) == 2
    assert "'xyz' is not 8 to 64 hex digits" in capsys.readouterr().err
