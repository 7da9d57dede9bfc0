"""Published weights by zoo name (detzoo.zoo.weights), `detzoo publish` and `detzoo verify`.

The "upstream" checkpoint is a torchvision Faster R-CNN built from torchvision's own classes
at a small size (ResNet-18, 32-channel FPN, 64-wide box head, 3 classes), saved as
torchvision saves state dicts under a published name ``<name>-<sha256[:8]>.pth``. A zoo
of its own (model index, metafile, config) under ``$DETZOO_CONFIG_ROOT`` points at it with
a ``file://`` URL; ``$DETZOO_CACHE`` is a temp folder. Nothing touches the network.

Detectron's checkpoints are all called ``model_final.pkl`` and checked by the md5 published
at ``<URL>.md5sum``: two of them (Faster R-CNN R-50-FPN in Detectron's blob layout at 1/8
width, two seeds) are served the same way, each with its ``.md5sum`` beside it."""

import hashlib
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
from detzoo.download import sha256_file
from detzoo.engine.checkpoint import load_checkpoint, save_checkpoint
from detzoo.errors import CheckpointError
from detzoo.zoo.converters import mmdet, torchvision
from detzoo.zoo.converters import convert_checkpoint
from detzoo.zoo.metafile import load_zoo
from tests.test_convert_detectron import GAINS, c2_layout, fill, write_detectron

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


def write_zoo(root: Path, models: dict[str, dict | None], config: str = CONFIG) -> None:
    """A model index and one metafile under ``root`` listing ``models`` (name -> Weights or None),
    each with a config file of its name holding ``config``."""
    models_yaml = []
    for name, weights in models.items():
        (root / f"{name}.py").write_text(config)
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


# --- Detectron's model_final.pkl files, checked by the md5 published beside them ---------------

DETECTRON = ("tiny_detectron_a", "tiny_detectron_b")
# Detectron's R-50-FPN Faster R-CNN at 1/8 width: the tiny test config on an R-50 body
DETECTRON_CONFIG = f"""_base_ = {str(TESTS / "configs" / "tiny_faster_rcnn.py")!r}
model = dict(backbone=dict(depth=50, stem_width=8, norm="FrozenBN"), neck=dict(out_channels=32),
             roi_heads=dict(box_head=dict(fc_dim=128)))
"""


@pytest.fixture(scope="module")
def detectron_upstream(tmp_path_factory) -> dict[str, Path]:
    """Two Detectron Faster R-CNN R-50-FPN checkpoints (``c2_layout``'s blob names and
    layout, every channel count, a multiple of 32, divided by 8; class, box and anchor counts
    as published), of seeds 0 and 1, each written as Detectron wrote them (a Python 2 pickle)
    under its model id as ``<id>/model_final.pkl``, with ``model_final.pkl.md5sum`` beside it."""
    root = tmp_path_factory.mktemp("detectron")
    shapes = {k: tuple(d // 8 if d % 32 == 0 else d for d in shape) for k, shape in c2_layout("faster").items()}
    served = {}
    for seed, (name, model_id) in enumerate(zip(DETECTRON, ("35857345", "35857389"))):
        (root / model_id).mkdir()
        path = write_detectron(root / model_id / "model_final.pkl", fill(shapes, seed=seed, gains=GAINS))
        md5_file(path).write_text(hashlib.md5(path.read_bytes()).hexdigest())
        served[name] = path
    return served


def md5_file(path: Path) -> Path:
    return path.with_name(path.name + ".md5sum")


@pytest.fixture
def detectron_zoo(tmp_path, monkeypatch, detectron_upstream) -> dict:
    """A zoo of the two Detectron models served from ``server/<model id>/``; an empty cache."""
    root, cache = tmp_path / "zoo", tmp_path / "cache"
    root.mkdir()
    served = {}
    for name, src in detectron_upstream.items():
        target = tmp_path / "server" / src.parent.name / src.name
        target.parent.mkdir(parents=True)
        served[name] = Path(shutil.copy(src, target))
        shutil.copy(md5_file(src), md5_file(target))
    write_zoo(root, {name: {"URL": path.as_uri(), "MD5": md5_file(path).as_uri(), "Format": "detectron"}
                     for name, path in served.items()}, config=DETECTRON_CONFIG)
    monkeypatch.setenv("DETZOO_CONFIG_ROOT", str(root))
    monkeypatch.setenv("DETZOO_CACHE", str(cache))
    return {"served": served, "cache": cache}


def test_detectron_weights_by_name_are_checked_converted_and_cached_apart(detectron_zoo, tmp_path):
    served, cache = detectron_zoo["served"], detectron_zoo["cache"]
    first = {name: predict(detzoo.load_model(name, pretrained=True)) for name in DETECTRON}
    # each cached under its zoo name with its md5 file beside it: the two model_final.pkl do not collide
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        f"{name}-model_final.pkl{suffix}" for name in DETECTRON for suffix in ("", ".md5sum"))
    for name in DETECTRON:
        assert (cache / f"{name}-model_final.pkl").read_bytes() == served[name].read_bytes()
    assert not np.array_equal(first[DETECTRON[0]]["boxes"], first[DETECTRON[1]]["boxes"])
    # the same detections as `detzoo convert --from detectron` of the served file
    for name in DETECTRON:
        out = tmp_path / f"{name}.pth"
        assert main(["convert", "--from", "detectron", str(served[name]), "--config", name, "--out", str(out)]) == 0
        ref = predict(detzoo.load_model(name, checkpoint=out))
        assert len(ref["boxes"]) > 0
        for key in ("boxes", "scores", "labels"):
            np.testing.assert_array_equal(first[name][key], ref[key])
    # later loads read the cache (the server is gone) and check it again: a changed byte is refused
    shutil.rmtree(served[DETECTRON[0]].parents[1])
    np.testing.assert_array_equal(predict(detzoo.load_model(DETECTRON[0], pretrained=True))["boxes"],
                                  first[DETECTRON[0]]["boxes"])
    cached = cache / f"{DETECTRON[1]}-model_final.pkl"
    data = bytearray(cached.read_bytes())
    data[-100] ^= 0x01
    cached.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"md5 mismatch for {re.escape(str(cached))}: expected "):
        detzoo.load_model(DETECTRON[1], pretrained=True)
    assert sorted(p.name for p in cache.iterdir()) == [f"{DETECTRON[0]}-model_final.pkl{s}" for s in ("", ".md5sum")]


def test_a_detectron_download_failing_its_md5_is_refused_and_not_kept(detectron_zoo, capsys):
    name = DETECTRON[0]
    served, cache = detectron_zoo["served"][name], detectron_zoo["cache"]
    published = md5_file(served).read_text()
    md5_file(served).write_text("0" * 32 + "\n")
    cached = cache / f"{name}-model_final.pkl"
    message = (f"md5 mismatch for {cached}: expected {'0' * 32} (from {md5_file(served).as_uri()}), got {published} "
               "(file removed, with its md5 file)")
    with pytest.raises(CheckpointError, match=re.escape(message)):
        detzoo.load_model(name, pretrained=True)
    assert list(cache.iterdir()) == []
    assert main(["infer", name, name, str(IMAGE), "--out", str(cache / "out")]) == 2
    assert capsys.readouterr().err == f"detzoo infer: error: {message}\n"
    assert list(cache.iterdir()) == []
    # an md5 file that holds no md5 (an error page, say) is refused too, and only it is removed
    md5_file(served).write_text("<html>Not Found</html>")
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(md5_file(cached)))} \(from .*\) does not start "
                                              r"with an md5, 32 hex digits \(file removed\)"):
        detzoo.load_model(name, pretrained=True)
    assert [p.name for p in cache.iterdir()] == [cached.name]
    md5_file(served).write_text(f"{published}  model_final.pkl\n")  # as `md5sum` prints it
    assert len(predict(detzoo.load_model(name, pretrained=True))["boxes"]) > 0


def test_offline_a_detectron_model_says_where_the_file_and_its_md5_go(detectron_zoo, detectron_upstream, capsys):
    name = DETECTRON[0]
    served, cache = detectron_zoo["served"][name], detectron_zoo["cache"]
    shutil.rmtree(served.parent)  # the server is gone
    target = cache / f"{name}-model_final.pkl"
    line = (rf"could not download {re.escape(served.as_uri())} \(.+\); download it and put it at "
            rf"{re.escape(str(target))}, and {re.escape(md5_file(served).as_uri())} "
            rf"at {re.escape(str(md5_file(target)))}$")
    with pytest.raises(CheckpointError, match=line):
        detzoo.load_model(name, pretrained=True)
    assert main(["infer", name, name, str(IMAGE), "--out", str(cache / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("detzoo infer: error: ") and re.search(line, err.rstrip("\n"))
    assert not cache.exists() or list(cache.iterdir()) == []
    # the checkpoint put there by hand, its md5 not yet: the message names the md5's URL and path
    cache.mkdir(exist_ok=True)
    shutil.copy(detectron_upstream[name], target)
    with pytest.raises(CheckpointError, match=rf"could not download {re.escape(md5_file(served).as_uri())} \(.+\); "
                                              rf"download it and put it at {re.escape(str(md5_file(target)))}$"):
        detzoo.load_model(name, pretrained=True)
    shutil.copy(md5_file(detectron_upstream[name]), md5_file(target))
    assert len(predict(detzoo.load_model(name, pretrained=True))["boxes"]) > 0


def test_every_detectron_row_has_the_detectron_checkpoint_of_its_model_id(capsys):
    """A config with a Detectron row (its model id in a Reference Source) has Detectron's
    weights of that id, checked by the md5 at ``<URL>.md5sum``; detectron weights belong to
    Detectron rows only."""
    zoo = load_zoo()
    rows = 0
    for model in zoo.models.values():
        ids = {m[1] for r in model.references if (m := re.match(r"Detectron model zoo \(seeds/002\), model id (\d+)",
                                                                r.source))}
        assert len(ids) <= 1, model.name
        weights = model.weights
        if not ids:
            assert weights is None or weights.format != "detectron", model.name
            continue
        rows += 1
        (model_id,) = ids
        assert weights is not None and weights.format == "detectron", model.name
        assert re.fullmatch(rf"https://dl\.fbaipublicfiles\.com/detectron/{model_id}/12_2017_baselines/"
                            r"[^/]+\.yaml\.\d\d_\d\d_\d\d\.\w{8}/output/train/[^/]+/"
                            r"(generalized_rcnn|rpn|retinanet)/model_final\.pkl", weights.url), model.name
        assert (weights.md5, weights.sha256) == (weights.url + ".md5sum", None), model.name
    assert rows == 74
    assert main(["zoo", "show", "faster_rcnn_r50_caffe_fpn_1x_coco"]) == 0
    url = zoo.find("faster_rcnn_r50_caffe_fpn_1x_coco").weights.url
    assert f"  weights:    {url} (md5 from {url}.md5sum, format detectron)\n" in capsys.readouterr().out


@pytest.mark.parametrize("by_name", [True, False], ids=["zoo-name", "torchvision-file"])
def test_train_load_from_a_zoo_name_or_another_toolboxs_file(zoo, tmp_path, synth_data, caplog, by_name):
    """`detzoo train --load-from` takes a zoo name (fetched, checked, converted) or a file in
    another toolbox's layout (told from its keys): the run starts from its weights."""
    source = NAME if by_name else str(zoo["served"])
    sets = [arg for s in [*data_overrides(synth_data), "schedule.iters=1", "schedule.steps=()", "optim.lr=1e-12"]
            for arg in ("--set", s)]
    with caplog.at_level("INFO", logger="detzoo.train"):
        assert main(["train", NAME, "--work-dir", str(tmp_path / "run"), "--load-from", source, *sets]) == 0
    assert any(f"tensors from {source}" in r.getMessage() for r in caplog.records)
    assert any("rows of circle, square, triangle (not among the checkpoint's classes)" in r.getMessage()
               for r in caplog.records)
    expected = convert_checkpoint(torch.load(zoo["served"], weights_only=True), "torchvision")["model"]
    trained = load_checkpoint(tmp_path / "run" / "model_final.pth")["model"]
    for key in ("backbone.layer4.1.conv2.weight", "neck.output_convs.3.0.weight", "roi_heads.box_head.fcs.1.weight"):
        torch.testing.assert_close(trained[key], expected[key], rtol=0, atol=1e-6)
