"""The bad-input matrix (issues 8 and 17): every damaged file or value a user may hand
detzoo ends in one line, ``detzoo CMD: error: ...``, naming the culprit, with exit code 2,
and leaves existing checkpoints and outputs as they were; the inputs detzoo accepts
(grayscale, RGBA, CMYK, 16-bit, EXIF-tagged images, boxes to skip or clip, extreme shapes)
come out as docs/data_rules.md says. Dataset-level rules already tested in test_data.py
(degenerate, negative, outside and clipped boxes, unknown category) are exercised here
through the command line. Issue 17 added: nothing hangs (malformed RLEs), nothing is
overwritten (outputs that are inputs, two trainings in one work dir), nothing is lost
(disk full, Ctrl-C, an evaluation failing after training), a checkpoint sets only model
conventions, and mismatched classes are named before inference."""

from __future__ import annotations

import contextlib
import copy
import errno
import hashlib
import io
import json
import logging
import multiprocessing
import os
import pickle
import re
import shlex
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

import detzoo
from detzoo.cli import main
from detzoo.config import ConfigError, load_config
from detzoo.data.images import read_rgb
from detzoo.data.synthetic import data_overrides
from detzoo.detectors.build import build_model
from detzoo.engine import trainer
from detzoo.engine.checkpoint import load_checkpoint, save_checkpoint
from detzoo.engine.schedule import WarmupMultiStepLR
from detzoo.errors import CheckpointError, DataError
from detzoo.evaluation.coco import coco_index, evaluate_coco
from tests.conftest import TESTS, tiny_config

TINY = str(TESTS / "configs" / "tiny_faster_rcnn.py")
SHORT = ("schedule={'iters': 3, 'steps': (2,)}", "runtime.checkpoint_interval=3", "runtime.log_interval=1")

pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch.load's, on the pickles below


def sets(*overrides: str) -> list[str]:
    return [arg for o in overrides for arg in ("--set", o)]


def cli(capsys, *argv: str) -> tuple[int, str]:
    """Run ``detzoo ARGV``: its exit code and its one error line (empty if none)."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("detzoo ")]
    assert len(errors) <= 1, errors
    return code, errors[0] if errors else ""


def fails(capsys, *argv: str, culprit: str | Path, match: str) -> str:
    """``detzoo ARGV`` exits with 2 and one line naming ``culprit`` and matching ``match``."""
    code, line = cli(capsys, *argv)
    assert code == 2, line
    command = argv[0]
    assert line.startswith(f"detzoo {command}: error: ") and str(culprit) in line, line
    assert re.search(match, line), line
    return line


def digests(*paths: Path) -> dict[Path, str]:
    """sha256 of each file (of each file below a folder); nothing for a path not there."""
    files = [f for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("*")) if p.is_dir() else [])]
    return {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.is_file()}


@pytest.fixture(scope="module")
def trained(synth_data, tmp_path_factory) -> Path:
    """A work dir of tiny Faster R-CNN trained 3 iterations: checkpoint.pth, model_final.pth."""
    work = tmp_path_factory.mktemp("trained")
    assert main(["train", TINY, "--work-dir", str(work), *sets(*data_overrides(synth_data), *SHORT)]) == 0
    return work


@pytest.fixture
def data(synth_data, tmp_path) -> Path:
    """A private copy of the synthetic train / val data, to damage."""
    shutil.copytree(synth_data, tmp_path / "data")
    return tmp_path / "data"


def edit_json(path: Path, change) -> Path:
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content))
    return path


# ---------------------------------------------------------------- images


def write_images(root: Path) -> dict[str, np.ndarray]:
    """One file per accepted kind of image, and the RGB pixels detzoo must read from it."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    expected = {}
    gray = rgb[:, :, 0]
    Image.fromarray(gray).save(root / "gray.png")
    expected["gray.png"] = np.repeat(gray[:, :, None], 3, axis=2)
    Image.fromarray(np.dstack([rgb, np.full((20, 30), 7, np.uint8)])).save(root / "rgba.png")
    expected["rgba.png"] = rgb  # alpha dropped, not blended
    Image.fromarray(rgb).convert("CMYK").save(root / "cmyk.jpg", quality=100)
    with Image.open(root / "cmyk.jpg") as im:
        assert im.mode == "CMYK"
        expected["cmyk.jpg"] = np.asarray(im.convert("RGB"))
    deep = (rng.integers(0, 65536, (20, 30))).astype(np.uint16)
    Image.fromarray(deep).save(root / "deep16.png")
    with Image.open(root / "deep16.png") as im:
        assert im.mode == "I;16"
    expected["deep16.png"] = np.repeat(np.rint(deep / 257).astype(np.uint8)[:, :, None], 3, axis=2)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned by 90 degrees
    Image.fromarray(rgb).save(root / "exif6.png", exif=exif.tobytes())
    expected["exif6.png"] = rgb  # the stored frame, 30 wide and 20 high
    return expected


def test_grayscale_rgba_cmyk_16bit_and_exif_images_read_by_the_rules(tmp_path, trained, capsys):
    expected = write_images(tmp_path / "images")
    for name, pixels in expected.items():
        assert np.array_equal(read_rgb(tmp_path / "images" / name), pixels), name
    assert read_rgb(tmp_path / "images" / "deep16.png").mean() < 160  # not the all-white image of a clip
    # through `detzoo infer`: nothing above a score of 2, so the drawn PNG is the image as the model saw it
    out = tmp_path / "drawn"
    code, line = cli(capsys, "infer", TINY, trained / "model_final.pth", *sorted((tmp_path / "images").iterdir()),
                     "--out", out, "--score-thresh", "2")
    assert code == 0, line
    for name, pixels in expected.items():
        assert np.array_equal(np.asarray(Image.open(out / f"{Path(name).stem}.png")), pixels), name


def test_image_listed_with_its_exif_displayed_size_names_the_orientation(data, capsys):
    ann = data / "train" / "annotations.json"
    first = json.loads(ann.read_text())["images"][0]
    name = data / "train" / "images" / first["file_name"]
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (first["width"], first["height"] // 2)).save(name, exif=exif.tobytes())
    edit_json(ann, lambda d: d["images"][0].update(width=first["height"] // 2, height=first["width"]))
    # browse reads the first image (training would leave it out: alone in its aspect-ratio group)
    fails(capsys, "browse", TINY, *sets(*data_overrides(data)), "--out", data / "browsed", "--num", "1", culprit=name,
          match=r"is 64x32 \(w x h\) on disk but 32x64 in the annotation file; its EXIF orientation \(6\)")


@pytest.mark.parametrize("damage", ["corrupt", "truncated"])
def test_corrupt_or_truncated_image_in_the_dataset(damage, data, trained, capsys):
    ann = data / "val" / "annotations.json"
    name = data / "val" / "images" / json.loads(ann.read_text())["images"][2]["file_name"]
    name.write_bytes(b"not an image" if damage == "corrupt" else name.read_bytes()[:300])
    results = data / "results.json"
    results.write_text("[]")
    before = digests(results, trained)
    fails(capsys, "test", TINY, trained / "model_final.pth", "--out", results, *sets(*data_overrides(data)),
          culprit=name, match="cannot read image")
    assert digests(results, trained) == before


def test_a_crashing_dataloader_worker_reports_the_file(data, capsys):
    ann = data / "train" / "annotations.json"
    name = data / "train" / "images" / json.loads(ann.read_text())["images"][0]["file_name"]
    name.write_bytes(name.read_bytes()[:200])
    line = fails(capsys, "train", TINY, *sets(*data_overrides(data), *SHORT, "data.num_workers=1"),
                 "--work-dir", data / "work", culprit=name, match=r"cannot read image ")
    assert "DataLoader" not in line and not (data / "work" / "checkpoint.pth").exists()


def test_missing_images(data, trained, tmp_path, capsys):
    # given to infer: refused before the model is loaded, nothing written
    out = tmp_path / "out"
    fails(capsys, "infer", TINY, trained / "model_final.pth", tmp_path / "nope.png", "--out", out,
          culprit=tmp_path / "nope.png", match="image file.* not found")
    assert not out.exists()
    with pytest.raises(FileNotFoundError, match="nope.png"):
        detzoo.load_model(TINY, trained / "model_final.pth").predict(tmp_path / "nope.png")
    # listed in the dataset: all missing files listed at construction
    ann = data / "train" / "annotations.json"
    file_name = json.loads(ann.read_text())["images"][3]["file_name"]
    (data / "train" / "images" / file_name).unlink()
    fails(capsys, "train", TINY, *sets(*data_overrides(data)), "--work-dir", data / "work", culprit=file_name,
          match=r"1 image file\(s\) missing under")


def test_decompression_bomb_is_refused_naming_the_file(monkeypatch, trained, tmp_path, capsys):
    image = tmp_path / "bomb.png"
    Image.new("RGB", (64, 64)).save(image)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 pixels: over twice the limit
    out = tmp_path / "out"
    fails(capsys, "infer", TINY, trained / "model_final.pth", image, "--out", out, culprit=image,
          match="refused as a possible decompression bomb")
    assert not out.exists()


# ---------------------------------------------------------------- annotations


@pytest.mark.parametrize("bbox", [[2, 2, float("nan"), 5], [2, 2, "10", 5], [2, 2, 5]])
def test_bbox_with_nan_or_strings_is_an_error_naming_the_annotation(bbox, data, capsys):
    ann = edit_json(data / "train" / "annotations.json", lambda d: d["annotations"][4].update(bbox=bbox))
    ann_id = json.loads(ann.read_text())["annotations"][4]["id"]
    fails(capsys, "train", TINY, *sets(*data_overrides(data)), "--work-dir", data / "work", culprit=ann,
          match=rf"annotation {ann_id} \(image \d+\) has bbox .*expected \[x, y, width, height\], four finite")


@pytest.mark.parametrize("entry, key, what", [
    ("annotations", "id", r"entry 2 of 'annotations' has no 'id'"),
    ("annotations", "category_id", r"annotation \d+ has no 'category_id'"),
    ("annotations", "image_id", r"annotation \d+ has no 'image_id'"),
    ("images", "height", r"image \d+ has no 'height'"),
    ("images", "id", r"entry 2 of 'images' has no 'id'"),
    ("categories", "name", r"category \d+ has no 'name'"),
])
def test_missing_required_key_names_the_entry(entry, key, what, data, capsys):
    ann = edit_json(data / "train" / "annotations.json", lambda d: d[entry][2 % len(d[entry])].pop(key))
    fails(capsys, "train", TINY, *sets(*data_overrides(data)), "--work-dir", data / "work", culprit=ann, match=what)


@pytest.mark.parametrize("entry", ["images", "annotations", "categories"])
def test_duplicate_ids_are_an_error_naming_the_id(entry, data, capsys):
    def duplicate(d):
        d[entry][1]["id"] = d[entry][0]["id"]

    ann = edit_json(data / "train" / "annotations.json", duplicate)
    first = json.loads(ann.read_text())[entry][0]["id"]
    fails(capsys, "train", TINY, *sets(*data_overrides(data)), "--work-dir", data / "work", culprit=ann,
          match=rf"id {first} is given more than once in '{entry}'")


def test_unknown_category_is_an_error_naming_annotation_and_category(data, capsys):
    ann = edit_json(data / "train" / "annotations.json", lambda d: d["annotations"][0].update(category_id=99))
    fails(capsys, "train", TINY, *sets(*data_overrides(data)), "--work-dir", data / "work", culprit=ann,
          match=r"annotation \d+ \(image \d+\) has category id 99, not in 'categories'")


@pytest.mark.parametrize("content, match", [
    ("", "is not valid JSON: Expecting value: line 1 column 1"),
    ('{"images": [', "is not valid JSON"),
    ("{}", "lists no images"),
    ('{"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}', "lists no images"),
])
def test_empty_or_invalid_annotation_file_fails_test_naming_it(content, match, data, trained, capsys):
    ann = data / "val" / "annotations.json"
    ann.write_text(content)
    results = data / "results.json"
    results.write_text("[]")
    before = digests(results)
    fails(capsys, "test", TINY, trained / "model_final.pth", "--out", results, *sets(*data_overrides(data)),
          culprit=ann, match=match)
    assert digests(results) == before


def test_images_without_annotations_are_predicted_but_not_scored(data, trained, capsys, caplog):
    """COCO test-dev style: `detzoo test --out` writes the results; the metrics are '-', not 0.0."""
    edit_json(data / "val" / "annotations.json", lambda d: d.update(annotations=[]))
    results = data / "results.json"
    code, line = cli(capsys, "test", TINY, trained / "model_final.pth", "--out", results, *sets(*data_overrides(data)))
    assert code == 0 and json.loads(results.read_text()) is not None, line
    assert "the ground truth has no annotations: nothing to evaluate (bbox metrics are -)" in caplog.text


def test_skipped_and_clipped_boxes_and_short_polygons_train_and_evaluate(data, tmp_path, caplog):
    """Degenerate, negative, outside and partly-outside boxes, and polygons of < 3 points,
    in training and in the ground truth of the final evaluation: skipped (or clipped) with
    logged counts; the evaluation does not crash, so model_final.pth is written."""
    bad = [([10, 10, 0, 5], None), ([10, 10, -4, 5], None), ([70, 70, 5, 5], None), ([60, 2, 20, 5], None),
           ([5, 5, 10, 10], [[5, 5, 15, 15]])]

    def add(d):
        for i, (bbox, segm) in enumerate(bad):
            d["annotations"].append({**d["annotations"][0], "id": 10_000 + i, "bbox": bbox,
                                     "segmentation": segm or d["annotations"][0]["segmentation"]})

    for split in ("train", "val"):
        edit_json(data / split / "annotations.json", add)
    cfg_sets = sets(*data_overrides(data), "schedule={'iters': 2, 'steps': (1,)}")
    work = tmp_path / "work"
    assert main(["train", str(TESTS / "configs" / "tiny_mask_rcnn.py"), "--work-dir", str(work), *cfg_sets]) == 0
    assert (work / "model_final.pth").is_file()
    log = caplog.text
    assert "skipped degenerate boxes (zero/negative size or outside the image): 3 annotation(s), " \
           "ids 10000, 10001, 10002" in log
    assert "clipped boxes partly outside the image: 1 annotation(s), ids 10003" in log
    assert "skipped annotations without a valid polygon or RLE: 1 annotation(s), ids 10004" in log
    assert "1 ground-truth annotation(s) without a polygon of 3+ points or an RLE left out of the segm " \
           "evaluation, ids 10004" in log
    metrics = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines() if "eval" in line]
    assert set(metrics[-1]["eval"]) == {"bbox", "segm"}


def test_bad_ground_truth_never_crashes_the_evaluation(caplog):
    """No area, a polygon of two points, no segmentation, no keypoints: evaluated anyway."""
    image = {"id": 1, "file_name": "a.png", "height": 40, "width": 60}
    square = [[10, 10, 30, 10, 30, 30, 10, 30]]
    anns = [{"id": 1, "bbox": [10, 10, 20, 20], "segmentation": square, "keypoints": [20, 20, 2], "num_keypoints": 1},
            {"id": 2, "bbox": [40, 5, 10, 10], "segmentation": [[40, 5, 50, 15]], "keypoints": [45, 10, 2]},
            {"id": 3, "bbox": [40, 20, 10, 10]}]
    coco = coco_index({"images": [image], "categories": [{"id": 1, "name": "a", "keypoints": ["k"]}],
                       "annotations": [{**a, "image_id": 1, "category_id": 1, "iscrowd": 0} for a in anns]})
    mask = np.zeros((40, 60, 1), np.uint8)
    mask[10:30, 10:30] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))[0]
    rle["counts"] = rle["counts"].decode()
    results = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9, "segmentation": rle}]
    assert evaluate_coco(coco, results, iou_type="bbox")["AP50"] == pytest.approx(1 / 3 * 1.0, abs=0.01)
    assert evaluate_coco(coco, results, iou_type="segm")["AP50"] == pytest.approx(1.0)  # only annotation 1 left
    assert "2 ground-truth annotation(s) without a polygon of 3+ points or an RLE left out of the segm " \
           "evaluation, ids 2, 3" in caplog.text
    assert "area" not in coco.dataset["annotations"][0]  # the ground truth given is not changed


# ---------------------------------------------------------------- checkpoints


class RunsCode:
    """Unpickling this calls os.system: the marker file appears if anything ran it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def damaged_checkpoint(kind: str, path: Path, trained: Path) -> Path:
    """A checkpoint file at ``path`` (suffix as given) damaged as ``kind`` says."""
    good = (trained / "checkpoint.pth").read_bytes()
    if kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "wrong architecture":  # the tiny RPN: no RoI heads
        rpn = build_model(tiny_config(Path("unused"), name="tiny_rpn")["model"])
        state = load_checkpoint(trained / "checkpoint.pth")
        save_checkpoint(path, {**state, "model": rpn.state_dict()})
    elif kind == "wrong architecture (mmdet)":  # for convert: a few keys of an R-50 Faster R-CNN box head
        torch.save({"state_dict": {"roi_head.bbox_head.fc_cls.weight": torch.zeros(81, 1024),
                                   "roi_head.bbox_head.fc_cls.bias": torch.zeros(81)}, "meta": {}}, path)
    elif kind == "malicious":
        with open(path, "wb") as f:
            pickle.dump({"model": RunsCode(path.parent / "marker")}, f, protocol=4)
    return path


CHECKPOINT_FAULTS = {"truncated": "could not be read \\(truncated or corrupt\\?\\)",
                     "wrong architecture": r"does not fit the model of its config: \d+ missing: ",
                     "malicious": "was refused: its pickle calls posix.system.*may contain code"}


@pytest.mark.parametrize("kind", list(CHECKPOINT_FAULTS))
@pytest.mark.parametrize("entry", ["train --resume", "test", "infer", "convert", "load_model"])
def test_damaged_checkpoint_through_every_entry_point(entry, kind, synth_data, trained, tmp_path, capsys):
    work = tmp_path / "work"
    shutil.copytree(trained, work)
    ckpt = work / "checkpoint.pth" if entry == "train --resume" else tmp_path / "bad.pth"
    mmdet = entry == "convert" and kind == "wrong architecture"  # convert reads another toolbox's format
    damaged_checkpoint(f"{kind} (mmdet)" if mmdet else kind, ckpt, trained)
    outputs = {"test": tmp_path / "results.json", "infer": tmp_path / "drawn", "convert": tmp_path / "converted.pth"}
    outputs["infer"].mkdir()
    for out in (outputs["test"], outputs["infer"] / "predictions.json", outputs["convert"]):
        out.write_text("[]")
    before = digests(work, *outputs.values())
    data = sets(*data_overrides(synth_data))
    image = next((synth_data / "val" / "images").iterdir())
    if entry == "load_model":
        with pytest.raises(CheckpointError, match=re.escape(str(ckpt)) + ".*" + CHECKPOINT_FAULTS[kind]):
            detzoo.load_model(TINY, ckpt)
    else:
        argv = {"train --resume": ["train", TINY, "--work-dir", work, "--resume", *data, *sets(*SHORT[1:])],
                "test": ["test", TINY, ckpt, "--out", outputs["test"], *data],
                "infer": ["infer", TINY, ckpt, image, "--out", outputs["infer"]],
                "convert": ["convert", "--from", "mmdet", ckpt, "--config", TINY, "--out", outputs["convert"]]}
        fails(capsys, *argv[entry], culprit=ckpt, match=CHECKPOINT_FAULTS[kind])
    assert digests(work, *outputs.values()) == before
    assert not (ckpt.parent / "marker").exists()


@pytest.mark.parametrize("entry", ["test", "infer", "convert", "load_model"])
def test_malicious_pkl_through_every_entry_point(entry, synth_data, trained, tmp_path, capsys):
    src = tmp_path / "model_final.pkl"
    src.write_bytes(pickle.dumps({"blobs": {"conv1_w": np.zeros(3)}, "x": RunsCode(tmp_path / "marker")}, protocol=2))
    out = tmp_path / "out.pth"
    match = r"was refused: .* detzoo will not run \(global posix\.system\)"
    if entry == "load_model":
        with pytest.raises(CheckpointError, match=re.escape(str(src)) + " " + match):
            detzoo.load_model(TINY, src)
    else:
        image = next((synth_data / "val" / "images").iterdir())
        argv = {"test": ["test", TINY, src, *sets(*data_overrides(synth_data))],
                "infer": ["infer", TINY, src, image, "--out", tmp_path / "drawn"],
                "convert": ["convert", "--from", "detectron2", src, "--config", TINY, "--out", out]}
        fails(capsys, *argv[entry], culprit=src, match=match)
    assert not (tmp_path / "marker").exists() and not out.exists() and not (tmp_path / "drawn").exists()


@pytest.mark.parametrize("command", ["train", "test"])
def test_malicious_proposals_npz_is_refused(command, synth_data, tmp_path, capsys):
    evil = tmp_path / "proposals.npz"
    np.savez(evil, image_ids=np.arange(8), counts=np.ones(8, np.int64),
             boxes=np.array([RunsCode(tmp_path / "marker")] * 8, dtype=object), scores=np.zeros(8, np.float32))
    fast = str(TESTS / "configs" / "tiny_fast_rcnn.py")
    data = sets(*data_overrides(synth_data), f"data.train.proposals_file={evil}", f"data.val.proposals_file={evil}")
    if command == "train":
        argv = ["train", fast, "--work-dir", tmp_path / "work", *data]
    else:
        ckpt = tmp_path / "fast.pth"
        fast_rcnn = build_model(tiny_config(synth_data, name="tiny_fast_rcnn")["model"])
        save_checkpoint(ckpt, {"model": fast_rcnn.state_dict()})
        argv = ["test", fast, ckpt, *data]
    fails(capsys, *argv, culprit=evil, match="was refused: it holds pickled Python objects")
    assert not (tmp_path / "marker").exists()


@pytest.mark.parametrize("source, match", [("mmdet", "does not fit the model of its config"),
                                           ("torchvision", "is not a torchvision checkpoint detzoo can convert")])
def test_convert_writes_nothing_when_its_check_fails(source, match, trained, tmp_path, capsys):
    src = damaged_checkpoint("wrong architecture (mmdet)", tmp_path / "mmdet.pth", trained)
    out = tmp_path / "converted.pth"
    fails(capsys, "convert", "--from", source, src, "--config", TINY, "--out", out, culprit=src, match=match)
    assert not out.exists() and not list(tmp_path.glob(".converted*"))  # no temp file either


# ---------------------------------------------------------------- config values


@pytest.mark.parametrize("override, match", [
    ("optim.lrr=0.1", r"unknown key 'optim.lrr'; did you mean 'lr'"),
    ("optim.lr=abc", r"'abc' is not a valid value for optim.lr, which holds float"),
    ("data.train_scales=[64,", r"'\[64,' is not a valid value for data.train_scales"),
    # issue 17: values of another kind than the key holds, a dict merged key by key, values out of range
    ("optim.lr='abc'", r"'abc' \(str\) is not a valid value for optim.lr, which holds number 0.04"),
    ("data.images_per_gpu=[2]", r"\[2\] \(sequence\) is not a valid value for data.images_per_gpu, which holds "
                                r"number 4"),
    ("model.backbone={'deptth': 18}", r"unknown key 'model.backbone.deptth'; did you mean 'depth'"),
    ("model.backbone={'depth': '18'}", r"'18' \(str\) is not a valid value for model.backbone.depth"),
    ("optim.lr=-0.04", r"optim.lr must be a positive number, got -0.04$"),
    ("optim.momentum=-0.9", r"optim.momentum must be a number >= 0, got -0.9$"),
    ("model.roi_heads.num_classes=-1", r"model.roi_heads.num_classes must be a positive integer, got -1$"),
    # a section replaced by None or a string: one line, not a TypeError deep in a builder
    ("optim=None", r"optim must be a dict, got None$"),
    ("runtime=None", r"runtime must be a dict, got None$"),
    ("model='faster'", r"model must be a dict, got 'faster'$"),
    ("schedule=None", r"schedule must be a dict or a schedule's name, got None$"),
    ("data.train=None", r"data.train is not set; give it as dict\(ann_file=..., img_dir=...\)$"),
    # None replaces any value (optional keys hold it), but not one whose constructor takes no None
    ("model.neck.out_channels=None", r"model.neck.out_channels may not be None; it takes int$"),
    ("model.roi_heads.box_coder_weights=None",
     r"model.roi_heads.box_coder_weights may not be None; it takes Sequence\[float\]$"),
    ("model.dense_head.anchor_generator=None", r"model.dense_head.anchor_generator must be a dict, got None$"),
    ("runtime.log_interval=None", r"runtime.log_interval may not be None$"),
    ("data.images_per_gpu=None", r"data.images_per_gpu may not be None$"),
])
def test_unknown_config_key_and_bad_value_name_them(override, match, trained, capsys):
    before = digests(trained)
    fails(capsys, "train", TINY, "--work-dir", trained, "--resume", "--set", override,
          culprit=override.split("=")[0], match=match)
    assert digests(trained) == before


def _keys(cfg: dict, prefix: str = ""):
    for key, value in cfg.items():
        yield f"{prefix}{key}", value
        if isinstance(value, dict):
            yield from _keys(value, f"{prefix}{key}.")


@pytest.mark.parametrize("config", sorted((TESTS / "configs").glob("tiny_*.py")), ids=lambda p: p.stem)
def test_none_for_any_model_or_data_key_builds_or_is_a_config_error(config):
    """Every key of ``model`` and ``data`` set to None (a dict also to 'x', {} and []): the
    detector builds (an optional key) or a ``ConfigError`` names the key, never a TypeError
    from inside a constructor."""
    refused = []
    for key, value in _keys(load_config(config)):
        if not key.startswith(("model", "data")) or value is None:
            continue
        for text in ("None", "'x'", "{}", "[]") if isinstance(value, dict) else ("None",):
            try:
                detzoo.load_model(str(config), overrides=[f"{key}={text}"])
            except ConfigError as e:
                refused.append(str(e))
    assert len(refused) > 20 and all("\n" not in r for r in refused), refused  # any other exception propagated


@pytest.mark.parametrize("config", sorted((TESTS / "configs").glob("tiny_*.py")), ids=lambda p: p.stem)
def test_a_model_value_of_another_kind_in_a_file_builds_or_is_a_config_error(config):
    """A config file is not held to the kinds ``--set`` checks: every value of ``model`` set
    to a string, a negative int, a float, a list and a bool (those of another kind than the
    value there) builds or is a ``ConfigError`` (the constructor's annotation, its own
    checks), never a TypeError from inside it."""
    model = load_config(config)["model"]
    refused = []
    for key, value in _keys(model):
        for other in () if isinstance(value, dict) else ("x", -1, 2.5, [1], True):
            if type(other) is type(value):
                continue
            changed = copy.deepcopy(model)
            *parents, name = key.split(".")
            node = changed
            for parent in parents:
                node = node[parent]
            node[name] = other
            try:
                build_model(changed)
            except ConfigError as e:
                refused.append(str(e))
    assert len(refused) > 50 and all("\n" not in r for r in refused), refused  # any other exception propagated


def test_a_dict_set_merges_into_the_section(synth_data, tmp_path, capsys):
    work = tmp_path / "work"
    code, line = cli(capsys, "train", TINY, "--work-dir", work,
                     *sets(*data_overrides(synth_data), *SHORT, "model.backbone={'frozen_stages': 1}"))
    assert code == 0, line
    backbone = detzoo.config.load_config(work / "config.py")["model"]["backbone"]
    assert backbone["frozen_stages"] == 1 and backbone["depth"] == 18 and backbone["stem_width"] == 8  # kept


def test_a_config_file_value_of_another_kind_names_the_key(tmp_path, capsys):
    config = tmp_path / "fc.py"
    config.write_text(f'_base_ = "{TINY}"\nmodel = dict(roi_heads=dict(box_head=dict(fc_dim="1024")))\n')
    fails(capsys, "train", config, "--work-dir", tmp_path / "work", culprit="model.roi_heads.box_head.fc_dim",
          match=r"'1024' \(str\) is not a valid value; it takes int$")


def test_a_config_file_whose_section_is_not_a_dict_names_the_file(tmp_path, capsys):
    config = tmp_path / "broken.py"
    config.write_text(f'_base_ = "{TINY}"\ndata = None\n')
    fails(capsys, "train", config, "--work-dir", tmp_path / "work", culprit=config,
          match=r"data must be a dict, got None$")
    assert not (tmp_path / "work").exists()


def test_data_val_none_trains_without_validation(synth_data, tmp_path, capsys):
    """``--set data.val=None`` (mmdetection's ``val_dataloader=None``): training, no evaluation."""
    work = tmp_path / "work"
    code, line = cli(capsys, "train", TINY, "--work-dir", work,
                     *sets(*data_overrides(synth_data), *SHORT, "runtime.eval_interval=1", "data.val=None"))
    assert code == 0, line
    records = [json.loads(r) for r in (work / "log.jsonl").read_text().splitlines()]
    assert any("loss" in r for r in records) and not any("eval" in r for r in records)
    assert (work / "model_final.pth").is_file()


def test_a_config_that_is_not_utf8(tmp_path, capsys):
    config = tmp_path / "latin1.py"
    config.write_bytes(f'_base_ = "{TINY}"\n# r\xe9sum\xe9\n'.encode("latin-1"))
    before = digests(config)
    fails(capsys, "train", config, "--work-dir", tmp_path / "work", culprit=config,
          match=r"is not UTF-8 text \(byte 0xe9 at offset \d+\)")
    assert digests(config) == before and not (tmp_path / "work").exists()


# ---------------------------------------------------------------- non-finite loss, resume with overrides


def test_non_finite_loss_stops_keeps_the_checkpoint_and_says_how_to_resume(synth_data, tmp_path, capsys):
    work = tmp_path / "work"
    args = ["train", TINY, "--work-dir", work,
            *sets(*data_overrides(synth_data), "schedule={'iters': 8, 'steps': (6,)}", "optim.warmup_iters=0",
                  "runtime.checkpoint_interval=2", "runtime.log_interval=1", "optim.lr=100")]
    line = fails(capsys, *args, culprit=work / "checkpoint.pth",
                 match=r"loss is nan \(loss_rpn_cls=\S+, loss_rpn_box=\S+, loss_cls=nan, loss_box=nan\) at "
                       r"iteration 4; "
                       r"training stopped; the last good checkpoint, .* \(iteration 2\), is left as it was: resume "
                       r"from it with a lower lr, e.g. optim.lr=10: detzoo train ")
    logged = [json.loads(entry)["iter"] for entry in (work / "log.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3] and not (work / "model_final.pth").exists()
    state = load_checkpoint(work / "checkpoint.pth")
    assert state["iteration"] == 2 and all(torch.isfinite(v).all() for v in state["model"].values())
    before = digests(work / "checkpoint.pth")
    # the command it gives resumes with optim.lr=10; from these weights the loss diverges again, and the
    # checkpoint stays as it was
    command = shlex.split(line.split(": detzoo train ", 1)[1])
    assert "--resume" in command and command[-2:] == ["--set", "optim.lr=10"]
    code, again = cli(capsys, "train", *command)
    assert code == 2 and "at iteration 4" in again and "(iteration 2), is left as it was" in again
    assert digests(work / "checkpoint.pth") == before


@pytest.mark.parametrize("interval, advice", [
    (3, r"the last checkpoint, .* \(iteration 3\), is left as it was, but its weights give this loss: start again"),
    (100, "no checkpoint of this run was written yet: start again"),
])
def test_non_finite_loss_without_a_checkpoint_to_resume_says_start_again(interval, advice, synth_data, tmp_path,
                                                                         capsys):
    work = tmp_path / "work"
    line = fails(capsys, "train", TINY, "--work-dir", work,
                 *sets(*data_overrides(synth_data), "schedule={'iters': 8, 'steps': (6,)}", "optim.warmup_iters=0",
                       f"runtime.checkpoint_interval={interval}", "optim.lr=100"),
                 culprit="optim.lr=10", match=r"loss is nan .* at iteration 4; training stopped; " + advice)
    assert "--resume" not in line.split(": detzoo train ", 1)[1]
    assert (work / "checkpoint.pth").exists() == (interval == 3)


def lr_factor(steps: tuple[int, ...], iteration: int) -> float:
    """The tiny config's lr factor at a 0-based iteration: 5-iteration warmup from 0.001, x0.1 per step."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1)
    return WarmupMultiStepLR(optimizer, steps=steps, warmup_iters=5, warmup_factor=0.001).factor(iteration)


def test_resume_applies_a_new_lr_from_the_next_iteration(synth_data, trained, tmp_path, capsys, caplog):
    work = tmp_path / "work"
    shutil.copytree(trained, work)
    longer = "schedule={'iters': 6, 'steps': (4,)}"
    code, line = cli(capsys, "train", TINY, "--work-dir", work, "--resume",
                     *sets(*data_overrides(synth_data), *SHORT[1:], longer, "optim.lr=0.01"))
    assert code == 0, line
    assert "with a changed config, applied from here on: optim.lr: 0.04 -> 0.01; schedule.iters: 3 -> 6; " \
           "schedule.steps: (2,) -> (4,)" in caplog.text
    logged = {entry["iter"]: entry["lr"] for entry in map(json.loads, (work / "log.jsonl").read_text().splitlines())
              if "lr" in entry}
    assert sorted(logged) == [1, 2, 3, 4, 5, 6]
    # lr at 4 batch images = lr x 4 / 16; iteration 3 ran before the resume, 4 after it, on the new schedule
    assert logged[3] == pytest.approx(0.04 * 4 / 16 * lr_factor((2,), 2), rel=1e-12)
    assert logged[4] == pytest.approx(0.01 * 4 / 16 * lr_factor((4,), 3), rel=1e-12)
    assert logged[6] == pytest.approx(0.01 * 4 / 16 * lr_factor((4,), 5), rel=1e-12)


def test_resume_refuses_overrides_it_cannot_apply(trained, synth_data, capsys):
    before = digests(trained)
    fails(capsys, "train", TINY, "--work-dir", trained, "--resume",
          *sets(*data_overrides(synth_data), "optim.norm_weight_decay=0.0"), culprit=trained / "checkpoint.pth",
          match="optimizer state does not fit this config's parameter groups")
    assert digests(trained) == before


# ---------------------------------------------------------------- bugs keep their traceback


def test_a_bug_keeps_its_traceback(monkeypatch, capsys):
    def bug(args):
        raise TypeError("a bug")

    monkeypatch.setattr("detzoo.cli.cmd_verify", bug)
    with pytest.raises(TypeError, match="a bug"):
        main(["verify", "x"])

    def library_value_error(args):
        np.zeros(3).reshape(2)  # numpy's ValueError: not one of detzoo's input checks

    monkeypatch.setattr("detzoo.cli.cmd_verify", library_value_error)
    with pytest.raises(ValueError, match="cannot reshape"):
        main(["verify", "x"])
    assert isinstance(DataError("x"), ValueError)  # DataError is still a ValueError for callers that catch one


# ---------------------------------------------------------------- issue 17: files, disk, proposals


class FullDisk(io.FileIO):
    """A file on a device with ``room`` bytes left: writing more raises ENOSPC, as the OS does."""

    room = 2000

    def write(self, data) -> int:
        if self.tell() + len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


def test_disk_full_while_saving_keeps_the_last_good_checkpoint(synth_data, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    saves = []

    def open_on_a_filling_disk(file, mode="r", *args, **kwargs):  # the second checkpoint finds the disk full
        saves.append(file)
        return FullDisk(file, mode.replace("b", "")) if len(saves) == 2 else open(file, mode, *args, **kwargs)

    monkeypatch.setattr("detzoo.files.open", open_on_a_filling_disk, raising=False)
    fails(capsys, "train", TINY, "--work-dir", work,
          *sets(*data_overrides(synth_data), "schedule={'iters': 6, 'steps': (4,)}", "runtime.checkpoint_interval=3"),
          culprit=work / "checkpoint.pth",
          match=r"no space left on the device to write .*checkpoint.pth: .* is left as it was")
    assert load_checkpoint(work / "checkpoint.pth")["iteration"] == 3  # the good one
    assert sorted(p.name for p in work.iterdir()) == ["checkpoint.pth", "config.py", "log.jsonl"]  # no temp file


def test_proposals_member_that_is_not_a_numpy_array(synth_data, tmp_path, capsys):
    bad = tmp_path / "proposals.npz"
    with zipfile.ZipFile(bad, "w") as archive:
        for key, array in (("image_ids", np.arange(8)), ("counts", np.zeros(8, np.int64)),
                           ("scores", np.zeros(0, np.float32))):
            buffer = io.BytesIO()
            np.save(buffer, array)
            archive.writestr(f"{key}.npy", buffer.getvalue())
        archive.writestr("boxes", b"not an array")
    fast = str(TESTS / "configs" / "tiny_fast_rcnn.py")
    ckpt = tmp_path / "fast.pth"
    save_checkpoint(ckpt, {"model": build_model(tiny_config(synth_data, name="tiny_fast_rcnn")["model"]).state_dict()})
    results = tmp_path / "results.json"
    results.write_text("[]")
    before = digests(results, ckpt)
    fails(capsys, "test", fast, ckpt, "--out", results,
          *sets(*data_overrides(synth_data), f"data.val.proposals_file={bad}"), culprit=bad,
          match=r"member\(s\) \['boxes'\] are not numpy arrays")
    assert digests(results, ckpt) == before


# ---------------------------------------------------------------- issue 17, 1: malformed RLEs never hang

MASK = str(TESTS / "configs" / "tiny_mask_rcnn.py")
SHORT_RLE = {"size": [64, 64], "counts": [100, 100]}  # runs adding up to 200, not 64 x 64: pycocotools loops


def within(seconds: float, *argv) -> tuple[int, str]:
    """``detzoo ARGV`` in a forked copy of this process, killed after ``seconds``: its exit
    code and what it wrote to stderr (its log included). A hang in pycocotools' C code
    ignores Ctrl-C and would stop the test run."""
    context = multiprocessing.get_context("fork")
    reader, writer = context.Pipe(duplex=False)

    def child() -> None:
        torch.set_num_threads(1)  # as a DataLoader worker: no thread pool inherited across the fork
        stream = io.StringIO()
        logging.getLogger().addHandler(logging.StreamHandler(stream))
        with contextlib.redirect_stderr(stream), contextlib.redirect_stdout(io.StringIO()):
            code = main([str(a) for a in argv])
        writer.send((code, stream.getvalue()))

    process = context.Process(target=child)
    process.start()
    finished = reader.poll(seconds)
    process.kill() if not finished else process.join()
    assert finished, f"detzoo {argv[0]} still ran after {seconds} s"
    return reader.recv()


@pytest.fixture(scope="module")
def trained_mask(synth_data, tmp_path_factory) -> Path:
    """tiny Mask R-CNN trained 2 iterations: its model_final.pth."""
    work = tmp_path_factory.mktemp("mask")
    cfg = sets(*data_overrides(synth_data), "schedule={'iters': 2, 'steps': (1,)}")
    assert main(["train", MASK, "--work-dir", str(work), *cfg]) == 0
    return work / "model_final.pth"


@pytest.mark.parametrize("counts", ["list", "compressed"])
def test_evaluating_a_malformed_ground_truth_rle_ends_within_seconds(counts, data, trained_mask):
    rle = SHORT_RLE if counts == "list" else mask_utils.frPyObjects(SHORT_RLE, 64, 64)
    rle = {**rle, "counts": rle["counts"].decode()} if counts == "compressed" else rle
    ann = edit_json(data / "val" / "annotations.json", lambda d: d["annotations"][0].update(segmentation=rle))
    ann_id = json.loads(ann.read_text())["annotations"][0]["id"]
    results = data / "results.json"
    code, err = within(30, "test", MASK, trained_mask, "--out", results, *sets(*data_overrides(data)))
    assert code == 0 and "Traceback" not in err, err
    assert f"1 ground-truth annotation(s) with an RLE pycocotools cannot take left out of the segm evaluation, " \
           f"ids {ann_id}; annotation {ann_id} has an RLE whose run lengths add up to 200, not 4096" in err
    # the same ground truth through analyze, with the results just written
    before = digests(ann, results)
    code, err = within(30, "analyze", results, "--ann", ann, "--out", data / "analysis", "--type", "segm")
    assert code == 0 and f"annotation {ann_id} has an RLE whose run lengths" in err, err
    assert digests(ann, results) == before


def test_a_malformed_result_rle_is_refused_naming_the_results_file(data, tmp_path):
    ann = data / "val" / "annotations.json"
    image_id = json.loads(ann.read_text())["images"][0]["id"]
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"image_id": image_id, "category_id": 1, "bbox": [1, 1, 9, 9], "score": 0.9,
                                    "segmentation": {"size": [64, 64], "counts": "PP"}}]))
    out = tmp_path / "analysis"
    code, err = within(30, "analyze", results, "--ann", ann, "--out", out, "--type", "segm")
    assert code == 2 and err.strip() == (
        f"detzoo analyze: error: {results}: result 0 (image {image_id}) has an RLE whose compressed counts cannot be "
        "read: the string ends in the middle of a run length"), err
    assert not out.exists()


def test_training_with_a_malformed_rle_refuses_at_once_and_an_evaluation_failure_keeps_the_model(
        data, tmp_path, monkeypatch, capsys):
    ann = edit_json(data / "val" / "annotations.json", lambda d: d["annotations"][1].update(segmentation=SHORT_RLE))
    ann_id = json.loads(ann.read_text())["annotations"][1]["id"]
    work = tmp_path / "work"
    cfg = sets(*data_overrides(data), "schedule={'iters': 2, 'steps': (1,)}")
    fails(capsys, "train", MASK, "--work-dir", work, *cfg, culprit=ann,
          match=rf"annotation {ann_id} \(image \d+\) has an RLE whose run lengths add up to 200, not 4096")
    assert not (work / "checkpoint.pth").exists()

    def failing_evaluation(*args, **kwargs):
        raise DataError("the evaluation failed")

    monkeypatch.setattr("detzoo.engine.trainer.evaluate", failing_evaluation)
    fails(capsys, "train", TINY, "--work-dir", work, *sets(*data_overrides(data), *SHORT),
          culprit="the evaluation failed", match="")
    assert load_checkpoint(work / "model_final.pth")["model"]  # written before the final evaluation


def test_a_person_without_keypoints_is_ignored_as_coco_ignores_it(caplog):
    """Training reads an annotation without ``keypoints`` as all invisible; the evaluation
    does too, so COCOeval ignores it (num_keypoints 0) and a detection on it is no false
    positive, as in COCO's own evaluation. It was left out, and the detection counted."""
    image = {"id": 1, "file_name": "a.png", "height": 100, "width": 100}
    seen = [v for x in range(17) for v in (10 + x, 10 + x, 2)]
    anns = [{"id": 1, "bbox": [10, 10, 20, 20], "keypoints": seen, "num_keypoints": 17},
            {"id": 2, "bbox": [60, 60, 20, 20]}]  # no keypoints key
    person = {"id": 1, "name": "person", "keypoints": [str(k) for k in range(17)]}
    coco = coco_index({"images": [image], "categories": [person], "annotations": [
        {**a, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 400} for a in anns]})
    on_it = [v for x in range(17) for v in (70, 70, 1)]
    results = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.5, "keypoints": seen},
               {"image_id": 1, "category_id": 1, "bbox": [60, 60, 20, 20], "score": 0.9, "keypoints": on_it}]
    assert evaluate_coco(coco, results, iou_type="keypoints")["AP"] == pytest.approx(1.0)
    assert "left out" not in caplog.text and "keypoints" not in coco.dataset["annotations"][1]


# ---------------------------------------------------------------- issue 17, 2: a checkpoint sets only conventions


@pytest.mark.parametrize("overrides, match", [
    ({"data.val.ann_file": "/elsewhere/annotations.json"},
     r"sets config key 'data.val.ann_file' \(meta.config_overrides\), which is not one of the model conventions"),
    ({"optim.lr": 10.0}, r"sets config key 'optim.lr'"),
    ({"model.roi_heads.smooth_l1_beta": "large"},
     r"sets \"model.roi_heads.smooth_l1_beta='large'\": 'large' \(str\) is not a valid value for "
     r"model.roi_heads.smooth_l1_beta, which holds number 0.0"),
    ({"model.roi_heads.num_classes": -1},
     r"model.roi_heads.num_classes must be a positive integer, got -1 \(model.roi_heads.num_classes: set by "
     r"checkpoint .*, meta.config_overrides\)"),
])
def test_a_checkpoint_may_set_only_the_conventions_converters_record(overrides, match, trained, synth_data, tmp_path,
                                                                      capsys):
    ckpt = tmp_path / "downloaded.pth"
    state = load_checkpoint(trained / "model_final.pth")
    save_checkpoint(ckpt, {**state, "meta": {**state["meta"], "config_overrides": overrides}})
    results = tmp_path / "results.json"
    results.write_text("[]")
    before = digests(ckpt, results)
    fails(capsys, "test", TINY, ckpt, "--out", results, *sets(*data_overrides(synth_data)),
          culprit=ckpt, match=match)
    assert digests(ckpt, results) == before


def test_the_conventions_a_checkpoint_records_are_applied_and_logged(trained, synth_data, tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO, logger="detzoo.api")
    ckpt = tmp_path / "converted.pth"
    state = load_checkpoint(trained / "model_final.pth")
    save_checkpoint(ckpt, {**state, "meta": {**state["meta"], "config_overrides": {"data.resize": "mmdet"}}})
    image = next((synth_data / "val" / "images").iterdir())
    code, line = cli(capsys, "infer", TINY, ckpt, image, "--out", tmp_path / "drawn")
    assert code == 0, line
    assert f"checkpoint {ckpt} sets the conventions it records: data.resize='mmdet'" in caplog.text
    assert detzoo.load_model(TINY, ckpt).config["data"]["resize"] == "mmdet"


# ---------------------------------------------------------------- issue 17, 3: no output replaces an input or another


def test_infer_draws_images_of_one_name_to_files_of_their_own(trained, synth_data, tmp_path, capsys):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    first, second = sorted((synth_data / "val" / "images").iterdir())[:2]
    shutil.copy(first, tmp_path / "a" / "img.png")
    shutil.copy(second, tmp_path / "b" / "img.png")
    out = tmp_path / "drawn"
    code, line = cli(capsys, "infer", TINY, trained / "model_final.pth", tmp_path / "a" / "img.png",
                     tmp_path / "b" / "img.png", "--out", out, "--score-thresh", "2")
    assert code == 0, line
    assert sorted(p.name for p in out.iterdir()) == ["a_img.png", "b_img.png", "predictions.json"]
    for folder, source in (("a", first), ("b", second)):  # each drawing is its own image (nothing above score 2)
        assert np.array_equal(np.asarray(Image.open(out / f"{folder}_img.png")), read_rgb(source))
    assert len(json.loads((out / "predictions.json").read_text())) == 2


def test_infer_into_the_input_folder_refuses_to_replace_an_image(trained, synth_data, tmp_path, capsys):
    images = tmp_path / "images"
    shutil.copytree(synth_data / "val" / "images", images)
    image = sorted(images.iterdir())[0]
    before = digests(images)
    fails(capsys, "infer", TINY, trained / "model_final.pth", image, "--out", images, culprit=image,
          match=r"writing .* would replace the input .*; choose another output")
    assert digests(images) == before


def test_browse_into_the_image_folder_refuses_to_replace_an_image(data, capsys):
    images = data / "train" / "images"
    before = digests(images)
    fails(capsys, "browse", TINY, *sets(*data_overrides(data)), "--out", images, "--num", "2", culprit=images,
          match=r"would replace the input")
    assert digests(images) == before


@pytest.mark.parametrize("command", ["test", "plot", "convert"])
def test_an_output_that_is_an_input_is_refused_before_anything_runs(command, trained, synth_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(synth_data, data)
    inputs = {"test": data / "val" / "annotations.json", "plot": tmp_path / "log.jsonl",
              "convert": tmp_path / "theirs.pth"}
    shutil.copy(trained / "log.jsonl", inputs["plot"])
    shutil.copy(trained / "model_final.pth", inputs["convert"])
    argv = {"test": ["test", TINY, trained / "model_final.pth", *sets(*data_overrides(data))],
            "plot": ["plot", inputs["plot"]],
            "convert": ["convert", "--from", "torchvision", inputs["convert"], "--config", TINY]}
    before = digests(data, *inputs.values(), trained)
    fails(capsys, *argv[command], "--out", inputs[command], culprit=inputs[command], match="would replace the input")
    assert digests(data, *inputs.values(), trained) == before


def test_infer_a_folder_reads_the_images_in_it(trained, synth_data, tmp_path, capsys):
    images = synth_data / "val" / "images"
    out = tmp_path / "drawn"
    code, line = cli(capsys, "infer", TINY, trained / "model_final.pth", images, "--out", out)
    assert code == 0, line
    names = sorted(p.name for p in images.iterdir())
    assert sorted(p.name for p in out.iterdir()) == sorted([*names, "predictions.json"])
    assert sorted(json.loads((out / "predictions.json").read_text())) == [str(images / n) for n in names]
    (tmp_path / "empty").mkdir()
    fails(capsys, "infer", TINY, trained / "model_final.pth", tmp_path / "empty", "--out", out,
          culprit=tmp_path / "empty", match="holds no image file")


# ---------------------------------------------------------------- issue 17, 4 and 6: one training per work dir, Ctrl-C


def test_two_trainings_cannot_share_a_work_dir_and_a_killed_ones_lock_is_taken_over(synth_data, tmp_path, capsys,
                                                                                       caplog):
    work = tmp_path / "work"
    data = sets(*data_overrides(synth_data))
    endless = [*data, *sets("schedule={'iters': 100000, 'steps': (90000,)}", "runtime.checkpoint_interval=1")]

    def first() -> None:
        torch.set_num_threads(1)  # as a DataLoader worker: no thread pool inherited across the fork
        with contextlib.redirect_stderr(io.StringIO()):
            main(["train", TINY, "--work-dir", str(work), *endless])

    running = multiprocessing.get_context("fork").Process(target=first)
    running.start()
    try:
        deadline = time.monotonic() + 60
        while not (work / "checkpoint.pth").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (work / "checkpoint.pth").exists() and running.is_alive()
        for flag in ("--resume", "--overwrite"):
            fails(capsys, "train", TINY, "--work-dir", work, flag, *data, culprit=work,
                  match=rf"is in use by another training \(pid {running.pid} on .*\): wait for it to end or give "
                        "another --work-dir")
    finally:
        running.kill()  # as the OOM killer or a lost node would: no chance to release anything
        running.join()
    before = {path: digest for path, digest in digests(work).items() if path.name != ".lock"}
    fails(capsys, "train", TINY, "--work-dir", work, *data, culprit=work,
          match=r"holds checkpoint.pth of an earlier run: continue it with --resume, or start afresh with --overwrite")
    assert digests(work) == before  # the killed run's stale lock taken over, and released
    code, line = cli(capsys, "train", TINY, "--work-dir", work, "--overwrite", *data, *sets(*SHORT))
    assert code == 0, line
    assert f"took over the lock of a training that ended without releasing it (pid {running.pid} on" in caplog.text
    assert [json.loads(r)["iter"] for r in (work / "log.jsonl").read_text().splitlines()] == [1, 2, 3, 3]
    assert load_checkpoint(work / "checkpoint.pth")["iteration"] == 3 and not (work / ".lock").exists()


def test_ctrl_c_names_the_checkpoint_left_and_the_resume_command_and_the_log_resumes_cleanly(
        synth_data, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    (work).mkdir()
    (work / "log.jsonl").write_text('{"iter": 99, "loss": 1.0}\n')  # an old run's, without a checkpoint
    write = trainer.TrainingLog.write

    def interrupted_at_5(log, record):
        if record["iter"] == 5:
            raise KeyboardInterrupt
        write(log, record)

    monkeypatch.setattr(trainer.TrainingLog, "write", interrupted_at_5)
    args = ["train", TINY, "--work-dir", work,
            *sets(*data_overrides(synth_data), "schedule={'iters': 6, 'steps': (4,)}", "runtime.checkpoint_interval=3",
                  "runtime.log_interval=1", "runtime.eval_interval=0")]
    code, line = cli(capsys, *args)
    assert code == 130
    assert line.startswith(f"detzoo train: interrupted; the last checkpoint, {work / 'checkpoint.pth'} (iteration 3), "
                           "is left as it was: resume from it: detzoo train "), line
    assert [json.loads(r)["iter"] for r in (work / "log.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    assert load_checkpoint(work / "checkpoint.pth")["iteration"] == 3
    monkeypatch.setattr(trainer.TrainingLog, "write", write)
    command = shlex.split(line.split(": detzoo train ", 1)[1])
    assert "--resume" in command
    code, line = cli(capsys, "train", *command)
    assert code == 0, line
    logged = [json.loads(r)["iter"] for r in (work / "log.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3, 4, 5, 6, 6]  # iteration 4 once: the abandoned record is gone; 6 twice: loss, eval


def test_overwrite_removes_nothing_when_the_new_run_is_refused(trained, synth_data, tmp_path, capsys):
    work = tmp_path / "work"
    shutil.copytree(trained, work)
    before = digests(work)
    fails(capsys, "train", TINY, "--work-dir", work, "--overwrite", *sets(*data_overrides(synth_data), "optim.lr=-1"),
          culprit="optim.lr", match="must be a positive number, got -1$")
    assert digests(work) == before
    fails(capsys, "train", TINY, "--work-dir", work, "--overwrite", "--resume", *sets(*data_overrides(synth_data)),
          culprit="--resume", match="give one of them")
    assert digests(work) == before


# ---------------------------------------------------------------- issue 17, 5: any image that can be read


@pytest.mark.parametrize("resize", ["torchvision", "mmdet"])
def test_extreme_shapes_get_detections_or_none(resize, trained, tmp_path, capsys):
    sizes = {"wide": (10, 10000), "tall": (10000, 10), "dot": (1, 1), "line": (1, 5000)}  # (h, w)
    rng = np.random.default_rng(0)
    for name, size in sizes.items():
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(tmp_path / f"{name}.png")
    out = tmp_path / "drawn"
    before = digests(tmp_path)
    code, line = cli(capsys, "infer", TINY, trained / "model_final.pth", *(tmp_path / f"{n}.png" for n in sizes),
                     "--out", out, "--score-thresh", "0", "--set", f"data.resize={resize!r}")
    assert code == 0, line
    predictions = json.loads((out / "predictions.json").read_text())
    for name, (h, w) in sizes.items():
        boxes = np.array(predictions[str(tmp_path / f"{name}.png")]["boxes"]).reshape(-1, 4)
        assert len(boxes) and (boxes >= 0).all() and (boxes[:, 0::2] <= w).all() and (boxes[:, 1::2] <= h).all()
        assert Image.open(out / f"{name}.png").size == (w, h)
    assert {path: digest for path, digest in digests(tmp_path).items() if out not in path.parents} == before


# ---------------------------------------------------------------- issue 17, 7: class names compared before inference


def swap_names(d):
    d["categories"][0]["name"], d["categories"][1]["name"] = d["categories"][1]["name"], d["categories"][0]["name"]


def drop_triangles(d):
    d["categories"] = d["categories"][:2]
    d["annotations"] = [a for a in d["annotations"] if a["category_id"] != 3]


def add_stars(d):
    d["categories"].append({"id": 4, "name": "star", "supercategory": "shape"})


@pytest.mark.parametrize("change, code, says", [
    (swap_names, 0, r"{ckpt} and {ann} name their categories differently \(id 1 is 'circle' there but "
                    r"'square' here; id 2 is 'square' there but 'circle' here\): detections are scored against the "
                    r"dataset's category of the same id"),
    (add_stars, 0, r"{ann} has categories 4 \('star'\) that {ckpt} does not predict: their AP is 0"),
    (drop_triangles, 2, r"detzoo test: error: {ckpt} predicts category ids 3 \('triangle'\), which {ann} lacks "
                        r"\(its categories: 1 \('circle'\), 2 \('square'\)\): evaluate it on a dataset of its "
                        r"categories"),
])
def test_testing_on_a_dataset_of_other_classes_says_what_differs_before_inference(change, code, says, data, trained,
                                                                                   capsys, caplog):
    ann = edit_json(data / "val" / "annotations.json", change)
    results = data / "results.json"
    results.write_text("[]")
    before = digests(ann, results, trained)
    ckpt = trained / "model_final.pth"
    assert main(["test", TINY, str(ckpt), "--out", str(results), *sets(*data_overrides(data))]) == code
    err = capsys.readouterr().err
    said = caplog.text + err  # the warnings are logged, the error printed
    assert re.search(says.format(ckpt=f"checkpoint {re.escape(str(ckpt))}", ann=re.escape(str(ann))), said), said
    assert "inference" not in err or code == 0  # refused before the inference pass (its progress bar)
    assert digests(ann, trained) == {k: v for k, v in before.items() if k != results}
    assert (digests(results) == {results: before[results]}) == (code == 2)


def test_training_with_a_validation_set_of_other_classes_stops_at_once(data, tmp_path, capsys):
    ann = edit_json(data / "val" / "annotations.json", drop_triangles)
    work = tmp_path / "work"
    fails(capsys, "train", TINY, "--work-dir", work, *sets(*data_overrides(data)), culprit=ann,
          match=r"train/annotations.json predicts category ids 3 \('triangle'\), which .* lacks")
    assert not (work / "checkpoint.pth").exists() and not (work / "log.jsonl").exists()


# ---------------------------------------------------------------- issue 17, 8: smaller ones


def test_a_square_image_with_a_90_degree_exif_tag_is_warned_about(data, capsys, caplog):
    ann = data / "train" / "annotations.json"
    name = data / "train" / "images" / json.loads(ann.read_text())["images"][0]["file_name"]
    exif = Image.Exif()
    exif[0x0112] = 8
    with Image.open(name) as im:
        assert im.width == im.height
        im.save(name, exif=exif.tobytes())
    before = digests(data / "train")
    code, line = cli(capsys, "browse", TINY, *sets(*data_overrides(data)), "--out", data / "browsed", "--num", "1")
    assert code == 0, line
    assert f"image {name} is square and its EXIF orientation (8) turns it by 90 degrees when displayed; detzoo reads " \
           "the stored pixels" in caplog.text
    assert digests(data / "train") == before
