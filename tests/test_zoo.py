"""The model zoo's metafiles (detzoo/configs/model-index.yml), their validation, ``detzoo zoo
list/show/table/record`` and the generated docs/model_zoo.md.

* every config under detzoo/configs/ (the ``_base_`` pieces aside) is one model of exactly one
  metafile, and one row of the generated tables;
* the committed docs/model_zoo.md is a fresh generation, and the metafiles are in the form
  ``zoo record`` rewrites them in;
* what the metafiles say about a config (style, schedule) is what the config builds;
* a few reference values, each checked by hand against the seed page it cites;
* a fault in a metafile is one error line naming the file and the model;
* ``zoo record`` appends a run to a temp copy of the zoo and the table shows it, labelled.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from torchvision.models.detection import (
    FasterRCNN_ResNet50_FPN_Weights,
    KeypointRCNN_ResNet50_FPN_Weights,
    MaskRCNN_ResNet50_FPN_Weights,
    RetinaNet_ResNet50_FPN_Weights,
)

from detzoo.cli import main
from detzoo.config import load_config
from detzoo.engine.schedule import SCHEDULES
from detzoo.zoo.metafile import ZooError, dump_metafile, find_model, load_zoo
from detzoo.zoo.tables import render_markdown

REPO = Path(__file__).resolve().parents[1]
CONFIG_ROOT = REPO / "detzoo" / "configs"
CONFIGS = sorted(p for p in CONFIG_ROOT.rglob("*.py") if "_base_" not in p.relative_to(CONFIG_ROOT).parts)
DOCS = REPO / "docs" / "model_zoo.md"


@pytest.fixture(scope="module")
def zoo():
    return load_zoo(CONFIG_ROOT)


def test_every_config_is_one_model_of_exactly_one_metafile(zoo):
    listed = {}
    for metafile in sorted({m.metafile for m in zoo.models.values()}):
        for entry in yaml.safe_load(metafile.read_text())["Models"]:
            listed.setdefault(entry["Name"], []).append(metafile)
    assert {name: files for name, files in listed.items() if len(files) > 1} == {}
    assert sorted(m.config for m in zoo.models.values()) == CONFIGS
    assert sorted(listed) == sorted(p.stem for p in CONFIGS)


def test_committed_model_zoo_md_is_a_fresh_generation_with_a_row_per_config(zoo):
    fresh = render_markdown(zoo, DOCS.parent)
    assert DOCS.read_text() == fresh, "docs/model_zoo.md is stale: run `detzoo zoo table --out docs/model_zoo.md`"
    rows = [line for line in fresh.splitlines() if line.startswith("| ") and "](../detzoo/configs/" in line]
    assert sorted(line.split("[", 1)[1].split("]", 1)[0] for line in rows) == sorted(p.stem for p in CONFIGS)
    assert render_markdown(zoo, DOCS.parent) == fresh  # deterministic


def test_metafiles_are_in_the_form_zoo_record_writes(zoo):
    for metafile in sorted({m.metafile for m in zoo.models.values()}):
        text = metafile.read_text()
        assert text == dump_metafile(yaml.safe_load(text)), f"{metafile} is not in dump_metafile's form"


def test_metadata_agrees_with_what_the_config_builds(zoo):
    for model in zoo.models.values():
        cfg = load_config(model.config)
        assert model.style == cfg["model"]["backbone"]["style"], model.name
        schedule = cfg["schedule"]
        if isinstance(schedule, str):
            assert model.lr_schd == schedule.replace("_", "-"), model.name
            assert (model.epochs, model.iterations) == (SCHEDULES[schedule].get("epochs"),
                                                        SCHEDULES[schedule].get("iters")), model.name
        else:  # the demo's own iteration schedule
            assert (model.epochs, model.iterations) == (None, schedule["iters"]), model.name


def test_torchvision_urls_are_torchvisions(zoo):
    for name, enum in (("faster_rcnn_r50_fpn_1x_coco", FasterRCNN_ResNet50_FPN_Weights.COCO_V1),
                       ("mask_rcnn_r50_fpn_1x_coco", MaskRCNN_ResNet50_FPN_Weights.COCO_V1),
                       ("keypoint_rcnn_r50_fpn_1x_coco", KeypointRCNN_ResNet50_FPN_Weights.COCO_V1),
                       ("retinanet_r50_fpn_1x_coco", RetinaNet_ResNet50_FPN_Weights.COCO_V1)):
        weights = zoo.find(name).weights
        assert (weights.url, weights.format) == (enum.url, "torchvision")
        assert weights.url.endswith(f"-{weights.sha256}.pth")
    assert [m.weights.format for m in zoo.models.values() if m.weights].count("mmdet") == 24


def test_reference_values_checked_by_hand_against_the_seed_pages(zoo):
    """Values read by hand off the seed pages the sources cite (seeds/000 FPG, 001 NAS-FPN,
    002 Detectron, 003 mmdetection v0, 004 GN+WS); the test does not read the seeds."""
    c4 = zoo.find("faster_rcnn_r50_caffe_c4_1x_coco").references
    assert [r.source for r in c4] == ["Detectron model zoo (seeds/002), model id 35857197"]
    assert (c4[0].images_per_gpu, c4[0].memory_gb, c4[0].train_s_iter, c4[0].inference_s_im,
            c4[0].metric("box AP")) == (1, 6.3, 0.566, "0.167 + 0.003", 34.8)

    kp = zoo.find("keypoint_rcnn_x101_32x8d_fpn_s1x_coco").references[0]
    assert "model id 37732318" in kp.source
    assert (kp.metric("box AP"), kp.metric("kp AP"), kp.memory_gb) == (56.9, 67.0, 14.2)
    assert {r.dataset for r in kp.results} == {"COCO person"}

    rpn = zoo.find("rpn_r50_caffe_fpn_1x_coco").references
    assert [(r.source, r.metric("AR@1000")) for r in rpn] == [
        ("Detectron model zoo (seeds/002), model id 35998814", 57.2),
        ("mmdetection v0 model zoo table (seeds/003)", 58.2)]
    assert (rpn[1].memory_gb, rpn[1].train_s_iter, rpn[1].inference_fps) == (4.5, 0.379, 14.4)

    fpg = zoo.find("mask_rcnn_r50_fpg-chn128_crop640_50e_coco")
    assert (fpg.references[0].source, fpg.references[0].memory_gb) == ("FPG page (seeds/000)", 15.3)
    assert (fpg.references[0].metric("box AP"), fpg.references[0].metric("mask AP")) == (41.7, 36.9)
    assert fpg.weights.sha256 == "5c6ea10d"

    nas = zoo.find("retinanet_r50_nasfpn_crop640_50e_coco").references[0]
    assert (nas.memory_gb, nas.inference_fps, nas.metric("box AP")) == (13.2, 23.0, 40.5)

    ws = zoo.find("mask_rcnn_x101_32x4d_fpn_gn_ws-all_20_23_24e_coco").references[0]
    assert (ws.source, ws.memory_gb, ws.inference_fps) == ("GN+WS page (seeds/004)", 12.2, None)
    assert (ws.metric("box AP"), ws.metric("mask AP")) == (42.7, 38.5)

    x152 = zoo.find("mask_rcnn_x152_32x8d_fpn_mstrain_s1x_coco").references
    assert [(r.metric("box AP"), r.metric("mask AP"), r.inference_s_im) for r in x152] == [
        (45.2, 39.7, "0.325 + 0.018"), (48.1, 41.5, "12.100 + 0.046")]


def test_find_model_suggests_close_names():
    assert find_model("retinanet_r50_fpn_1x_coco", CONFIG_ROOT).weights.sha256 == "eeacb38b"
    with pytest.raises(ZooError, match=r"no model named 'retinanet_r50_fpn_1x'.*did you mean 'retinanet_r50_fpn_1x_co"):
        find_model("retinanet_r50_fpn_1x", CONFIG_ROOT)


# --- validation, on a small zoo of its own -------------------------------------------------

COLLECTION = {"Name": "Tiny", "Paper": {"Title": "Tiny", "URL": "https://example.org/tiny"},
              "Metadata": {"Training Data": "COCO", "Training Techniques": ["SGD with Momentum"],
                           "Training Resources": "none", "Architecture": ["FPN"]},
              "README": "none"}


def _model(name: str, **extra) -> dict:
    return {"Name": name, "In Collection": "Tiny", "Config": f"tiny/{name}.py",
            "Metadata": {"Backbone": "R-18-FPN", "Style": "pytorch", "Lr schd": "1x", "Epochs": 12}, **extra}


def _write_zoo(root: Path, metafiles: dict[str, list[dict]]) -> None:
    (root / "tiny").mkdir(parents=True, exist_ok=True)
    for i, (name, models) in enumerate(metafiles.items()):
        for model in models:
            (root / model["Config"]).write_text('"""A stand-in config."""\n')
        data = {"Collections": [COLLECTION], "Models": models} if i == 0 else {"Models": models}
        (root / name).write_text(dump_metafile(data))
    (root / "model-index.yml").write_text(yaml.safe_dump({"Import": list(metafiles)}))


def _error(root: Path) -> str:
    with pytest.raises(ZooError) as info:
        load_zoo(root)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_valid_small_zoo_loads(tmp_path):
    url = "https://example.org/tiny_a-0123abcd.pth"
    _write_zoo(tmp_path, {"a.yml": [_model("tiny_a", Weights={"URL": url, "SHA256": "0123abcd", "Format": "mmdet"})]})
    model = load_zoo(tmp_path).find("tiny_a")
    assert (model.weights.url, model.weights.sha256, model.weights.format) == (url, "0123abcd", "mmdet")
    assert (model.references, model.measured) == ((), ())


@pytest.mark.parametrize("models, pattern", [
    ([_model("tiny_a", Metadat={})], r"a\.yml: model 'tiny_a': unknown key 'Metadat'; did you mean 'Metadata'"),
    ([dict(_model("tiny_a"), Metadata={"Backbone": "R-18", "Style": "pytorch", "Lr schd": "1x", "Epoch": 12})],
     r"a\.yml: model 'tiny_a': unknown key 'Metadata\.Epoch'; did you mean 'Epochs'"),
    ([_model("tiny_a", Weights={"URL": "https://example.org/tiny_a-0123abcd.pth", "Format": "mmdet"})],
     r"a\.yml: model 'tiny_a': Weights needs exactly one of 'SHA256' and 'MD5'$"),
    ([_model("tiny_a", Weights={"URL": "https://example.org/tiny_a-0123abcd.pth", "SHA256": "0123abcd",
                                "MD5": "https://example.org/tiny_a-0123abcd.pth.md5sum", "Format": "mmdet"})],
     r"a\.yml: model 'tiny_a': Weights needs exactly one of 'SHA256' and 'MD5'$"),
    ([_model("tiny_a", Weights={"URL": "https://example.org/model_final.pkl", "MD5": "d41d8cd98f00b204e9800998ecf8427e",
                                "Format": "detectron"})],
     r"a\.yml: model 'tiny_a': Weights\.MD5 'd41d8cd98f00b204e9800998ecf8427e' is not the URL of a file holding"),
    ([_model("tiny_a", Weights={"URL": "https://example.org/tiny_a.pth", "SHA256": "0123abcd", "Format": "mmdet"})],
     r"a\.yml: model 'tiny_a': Weights\.SHA256 '0123abcd' is not the 8 hex digits"),
    ([dict(_model("tiny_a"), **{"In Collection": "Tiyn"})],
     r"a\.yml: model 'tiny_a': In Collection 'Tiyn' is not a collection of the zoo; did you mean 'Tiny'"),
    ([_model("tiny_a", Reference=[{"Source": "x", "Results": [
        {"Task": "Object Detection", "Dataset": "COCO", "Metrics": {"box mAP": 1.0}}]}])],
     r"a\.yml: model 'tiny_a': unknown key 'Reference\[0\]\.Results\[0\]\.Metrics\.box mAP'"),
])
def test_a_bad_metafile_is_one_line_naming_file_model_and_key(tmp_path, models, pattern):
    _write_zoo(tmp_path, {"a.yml": models})
    assert re.match(re.escape(str(tmp_path)) + "/" + pattern, _error(tmp_path))


def test_a_missing_config_and_a_model_in_two_files_are_errors_naming_them(tmp_path):
    _write_zoo(tmp_path, {"a.yml": [_model("tiny_a")], "b.yml": [_model("tiny_a")]})
    message = _error(tmp_path)
    assert f"{tmp_path / 'b.yml'}: model 'tiny_a' is already listed in {tmp_path / 'a.yml'}" == message
    _write_zoo(tmp_path, {"a.yml": [_model("tiny_a")]})
    (tmp_path / "tiny" / "tiny_a.py").unlink()
    assert _error(tmp_path).startswith(f"{tmp_path / 'a.yml'}: model 'tiny_a': config 'tiny/tiny_a.py' not found")


def test_cli_reports_a_bad_metafile_in_one_line(tmp_path, monkeypatch, capsys):
    _write_zoo(tmp_path, {"a.yml": [_model("tiny_a", Weights={"URL": "https://example.org/tiny_a-0123abcd.pth"})]})
    monkeypatch.setenv("DETZOO_CONFIG_ROOT", str(tmp_path))
    assert main(["zoo", "list"]) == 2
    err = capsys.readouterr().err
    assert err == f"detzoo zoo: error: {tmp_path / 'a.yml'}: model 'tiny_a': missing key(s) 'Weights.Format'\n"


# --- the command line, and zoo record on a copy of the real zoo ------------------------------

def test_zoo_list_show_and_table(tmp_path, capsys):
    assert main(["zoo", "list", "--family", "fpg"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "collection", "box", "AP", "mask", "AP", "kp", "AP", "AR1000", "weights"]
    assert [line.split()[0] for line in lines[1:]] == [
        "faster_rcnn_r50_fpg_crop640_50e_coco", "faster_rcnn_r50_fpg-chn128_crop640_50e_coco",
        "mask_rcnn_r50_fpg_crop640_50e_coco", "mask_rcnn_r50_fpg-chn128_crop640_50e_coco",
        "retinanet_r50_fpg_crop640_50e_coco", "retinanet_r50_fpg-chn128_crop640_50e_coco"]
    assert lines[3].split()[1:] == ["FPG", "42.7", "37.8", "-", "-", "mmdet"]
    assert main(["zoo", "list", "--family", "nope"]) == 2
    assert "no model family 'nope'; families: RPN, " in capsys.readouterr().err

    assert main(["zoo", "show", "faster_rcnn_r50_fpn_1x_coco"]) == 0
    out = capsys.readouterr().out
    assert "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth (sha256 258fb6c6..., format torchvision)" in out
    assert out.index("reference (published") < out.index("mmdetection v0 model zoo table (seeds/003)") \
        < out.index("measured by detzoo:\n  - config: faster_rcnn_r50_fpn_1x_coco\n    command: detzoo benchmark ")
    assert main(["zoo", "show", "faster_rcnn_r50_fpn_2x_coco"]) == 0
    assert "measured by detzoo:\n  none recorded" in capsys.readouterr().out

    out = tmp_path / "docs" / "model_zoo.md"
    assert main(["zoo", "table", "--out", str(out)]) == 0
    assert out.read_text() == render_markdown(load_zoo(CONFIG_ROOT), out.parent)
    assert "](../../../" in out.read_text()  # links relative to where the file is written


RUN = {
    "config": "detzoo/configs/retinanet/retinanet_r50_fpn_1x_coco.py",
    "checkpoint": None,
    "command": "detzoo benchmark detzoo/configs/retinanet/retinanet_r50_fpn_1x_coco.py --json run.json",
    "date": "2026-11-22",
    "environment": {"device": "cpu", "device_type": "cpu", "processor": "x86_64", "threads": 2, "torch": "2.14.1",
                    "torchvision": "0.29.1", "detzoo": "0.1.0", "python": "3.11.7"},
    "inference": {"images": 3, "warmup": 1, "input": "tests/data/coco", "fps": 0.4321, "model_s": 2.1,
                  "postprocess_s": 0.214},
    "train": {"iters": 2, "warmup": 1, "batch_size": 2, "s_iter": 9.87654, "peak_memory_gb": 3.5,
              "memory_kind": "peak_rss"},
    "complexity": {"gflops": 151.5, "params_m": 34.0, "input_shape": [3, 800, 1216]},
}


def test_zoo_record_appends_the_run_and_the_table_shows_it_labelled(tmp_path, monkeypatch, capsys):
    root = Path(shutil.copytree(CONFIG_ROOT, tmp_path / "configs"))
    monkeypatch.setenv("DETZOO_CONFIG_ROOT", str(root))
    metafile = root / "retinanet" / "metafile.yml"
    before = yaml.safe_load(metafile.read_text())
    committed = (CONFIG_ROOT / "retinanet" / "metafile.yml").read_text()
    run_json = tmp_path / "run.json"
    run_json.write_text(json.dumps(RUN))

    assert main(["zoo", "record", str(run_json)]) == 0
    assert capsys.readouterr().out == (f"recorded the 2026-11-22 run on CPU, 2 thr for retinanet_r50_fpn_1x_coco "
                                       f"in {metafile}\n")
    after = yaml.safe_load(metafile.read_text())
    entry = next(m for m in after["Models"] if m["Name"] == "retinanet_r50_fpn_1x_coco")
    assert entry.pop("Measured") == [RUN]  # the record as benchmark wrote it, nothing else changed
    assert after == before
    assert (CONFIG_ROOT / "retinanet" / "metafile.yml").read_text() == committed  # only the copy was written

    # a second run, on a GPU, recorded under an explicit name; evaluation metrics only
    gpu = dict(RUN, config="/tmp/copy.py", environment=dict(RUN["environment"], device="NVIDIA H100 80GB HBM3",
                                                              device_type="cuda"),
               inference=None, train=None, complexity=None, metrics={"bbox": {"AP": 0.3642, "AP50": 0.55}})
    run_json.write_text(json.dumps(gpu))
    assert main(["zoo", "record", str(run_json), "--name", "retinanet_r50_fpn_1x_coco"]) == 0
    model = load_zoo(root).find("retinanet_r50_fpn_1x_coco")
    assert [r.device_label for r in model.measured] == ["CPU, 2 thr", "NVIDIA H100 80GB HBM3"]

    table = render_markdown(load_zoo(root), tmp_path / "docs")
    lines = table.splitlines()
    row = next(line for line in lines if "[retinanet_r50_fpn_1x_coco]" in line)
    header = next(line for line in lines[lines.index(row)::-1] if line.startswith("| backbone"))
    cells = dict(zip(header.strip("| ").split(" | "), row.strip("| ").split(" | ")))
    assert cells["box AP"] == "36.4"  # reference: torchvision's weights metadata
    assert cells["measured Mem (GB)"] == "3.50 (CPU, 2 thr, peak RSS)"
    assert cells["measured train s/iter"] == "9.877 (CPU, 2 thr, batch 2)"
    assert cells["measured Inf time"] == "0.43 fps, 2.100 + 0.214 s/im (CPU, 2 thr)"
    assert cells["measured GFLOPs / params (M)"] == "151.5 / 34.0 (input 800x1216)"
    assert cells["measured box AP"] == "36.4 (NVIDIA H100 80GB HBM3)"
    assert metafile.read_text() == dump_metafile(yaml.safe_load(metafile.read_text()))


def test_zoo_record_refuses_a_bad_run_and_leaves_the_metafile_alone(tmp_path, monkeypatch, capsys):
    root = Path(shutil.copytree(CONFIG_ROOT, tmp_path / "configs"))
    monkeypatch.setenv("DETZOO_CONFIG_ROOT", str(root))
    metafile = root / "retinanet" / "metafile.yml"
    before = metafile.read_text()
    run_json = tmp_path / "run.json"
    for bad, message in (
        (dict(RUN, environment={k: v for k, v in RUN["environment"].items() if k != "threads"}),
         f"{run_json}: missing key(s) 'environment.threads'"),
        (dict(RUN, train=dict(RUN["train"], memory_kind="rss")), f"{run_json}: train.memory_kind: invalid value 'rss'"),
        (dict(RUN, inference=None, train=None, complexity=None),
         f"{run_json}: the record holds no figures: one of inference, train, complexity or metrics is needed"),
        (dict(RUN, config="retinanet_r50_fpn_1x"), "no model named 'retinanet_r50_fpn_1x'"),
    ):
        run_json.write_text(json.dumps(bad))
        assert main(["zoo", "record", str(run_json)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"detzoo zoo: error: {message}") and err.count("\n") == 1
        assert metafile.read_text() == before
