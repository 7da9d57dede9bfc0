"""detzoo plot / browse / analyze and TensorBoard logging, on tiny inputs."""

import contextlib
import csv
import io
import json
import sys

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import detzoo.engine.trainer as trainer
from detzoo.cli import main
from detzoo.config import ConfigError
from detzoo.data.synthetic import data_overrides
from detzoo.tools.analyze import ALL_CLASSES, ERROR_TYPES
from detzoo.visualize import PALETTE
from tests.conftest import TESTS, tiny_config


def _train_log(path, lr_scale=1.0):
    records = [{"iter": i, "epoch": 0, "lr": 0.01 * lr_scale * i, "loss": 2.0 / i, "loss_cls": 1.0 / i,
                "loss_box_reg": 1.0 / i, "time": 0.1, "data_time": 0.01} for i in (5, 10, 15, 20)]
    records.insert(2, {"iter": 10, "eval": {"bbox": {"AP": 0.2, "AP50": 0.4, "APs": -1.0}}})
    records.append({"iter": 20, "eval": {"bbox": {"AP": 0.3, "AP50": 0.5, "APs": -1.0}}})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_plot_overlays_logs_in_the_panels_asked_for(tmp_path, capsys):
    a, b = _train_log(tmp_path / "run_a" / "log.jsonl"), _train_log(tmp_path / "run_b" / "log.jsonl", 2.0)
    assert main(["plot", str(a), str(b), "--out", str(tmp_path / "curves.png")]) == 0
    # several logs: a panel per loss term to compare them, up to 4 panels of 4.5 x 3.8 inches in a row at 100 dpi
    assert "(loss; loss_cls; loss_box_reg; lr; bbox.AP,bbox.AP50)" in capsys.readouterr().out
    with Image.open(tmp_path / "curves.png") as im:
        assert im.format == "PNG" and im.size == (1800, 760)
    assert main(["plot", str(a), "--out", str(tmp_path / "one.png")]) == 0  # one log: the terms with the total
    assert "(loss,loss_cls,loss_box_reg; lr; bbox.AP,bbox.AP50)" in capsys.readouterr().out
    with Image.open(tmp_path / "one.png") as im:
        assert im.size == (1350, 380)

    assert main(["plot", str(a), "--out", str(tmp_path / "two.png"), "--keys", "loss_cls", "bbox.AP"]) == 0
    with Image.open(tmp_path / "two.png") as im:
        assert im.size == (900, 380)
    assert main(["plot", str(a), "--out", str(tmp_path / "x.png"), "--keys", "loss_mask"]) == 2
    err = capsys.readouterr().err
    assert "no log has 'loss_mask'" in err and "loss_cls" in err and "bbox.AP50" in err


def test_plot_names_the_bad_line(tmp_path, capsys):
    log = _train_log(tmp_path / "log.jsonl")
    log.write_text(log.read_text() + '{"iter": 25, "loss": \n')
    assert main(["plot", str(log), "--out", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("detzoo plot: error: ") and f"{log}, line 7: not JSON" in err and "\n" not in err
    log.write_text('{"loss": 1.0}\n')
    assert main(["plot", str(log), "--out", str(tmp_path / "c.png")]) == 2
    assert f"{log}, line 1: expected a JSON object with an integer 'iter'" in capsys.readouterr().err
    assert not (tmp_path / "c.png").exists()


def test_tensorboard_gets_the_scalars_of_log_jsonl(synth_data, tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_config(synth_data, "schedule={'iters': 2, 'steps': (1,)}", "runtime.log_interval=1",
                      "runtime.tensorboard=True")
    trainer.train(cfg, work_dir=tmp_path)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    train = [r for r in records if "eval" not in r]
    (evaluation,) = [r for r in records if "eval" in r]
    expected = {f"train/{k}" for k in train[0] if k != "iter"} | {f"val/bbox/{m}" for m in evaluation["eval"]["bbox"]}
    assert {"train/loss", "train/lr", "train/loss_rpn_cls", "val/bbox/AP"} <= expected
    assert tags == expected
    for key in ("loss", "lr", "loss_cls"):
        scalars = events.Scalars(f"train/{key}")
        assert [s.step for s in scalars] == [r["iter"] for r in train] == [1, 2]
        np.testing.assert_allclose([s.value for s in scalars], [r[key] for r in train], rtol=1e-6)
    (ap,) = events.Scalars("val/bbox/AP")
    assert ap.step == 2 and ap.value == pytest.approx(evaluation["eval"]["bbox"]["AP"], rel=1e-6)


def test_tensorboard_without_the_package_is_one_clear_error(synth_data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # not importable, as when not installed
    with pytest.raises(ConfigError, match=r"pip install detzoo\[tensorboard\]"):
        trainer.train(tiny_config(synth_data, "runtime.tensorboard=True"), work_dir=tmp_path)
    cfg = tiny_config(synth_data)  # not through --set, which refuses a str for a bool
    cfg["runtime"]["tensorboard"] = "yes"
    with pytest.raises(ConfigError, match="runtime.tensorboard must be True or False"):
        trainer.train(cfg, work_dir=tmp_path)
    assert not (tmp_path / "log.jsonl").exists()


def _colored(pixels, xs, ys, color):
    """Whether any pixel of columns ``xs`` x rows ``ys`` has exactly ``color``."""
    window = pixels[min(ys) : max(ys) + 1, min(xs) : max(xs) + 1]
    return bool((window == color).all(-1).any())


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_browse_draws_boxes_where_the_training_transforms_put_them(synth_data, tmp_path, flip):
    # 64-px images resized to 80 (x1.25), flipped or not, padded to 96 (the model's size divisibility 32)
    config = str(TESTS / "configs" / "tiny_faster_rcnn.py")
    overrides = [*data_overrides(synth_data), "data.train_scales=[80]", "data.max_size=200", f"data.flip_prob={flip}"]
    argv = ["browse", config, "--out", str(tmp_path), "--num", "3"] + [a for o in overrides for a in ("--set", o)]
    assert main(argv) == 0
    gt = json.loads((synth_data / "train" / "annotations.json").read_text())
    checked = 0
    for image in gt["images"][:3]:
        with Image.open(tmp_path / image["file_name"]) as im:
            assert im.format == "PNG" and im.size == (96, 96)
            pixels = np.asarray(im.convert("RGB"))
        for ann in (a for a in gt["annotations"] if a["image_id"] == image["id"]):
            x, y, w, h = (1.25 * v for v in ann["bbox"])
            x1, x2 = (80 - x - w, 80 - x) if flip else (x, x + w)
            color = PALETTE[ann["category_id"] - 1]
            rows = range(int(y + h / 2) - 1, int(y + h / 2) + 2)
            for edge in (x1, x2):  # left and right edges, around their middle
                assert _colored(pixels, range(round(edge) - 1, round(edge) + 2), rows, color), (image, ann, edge)
                checked += 1
        padding = np.concatenate([pixels[82:].reshape(-1, 3), pixels[:, 82:].reshape(-1, 3)])
        assert (padding == pixels[-1, -1]).all()  # one colour: the pixel mean
    assert checked >= 6


def test_browse_draws_transformed_masks_and_keypoints(synth_data, synth_people, tmp_path):
    config = str(TESTS / "configs" / "tiny_mask_rcnn.py")
    overrides = [*data_overrides(synth_data), "data.flip_prob=1.0"]  # 64 px stays 64 px: only the flip
    assert main(["browse", config, "--out", str(tmp_path / "masks"), "--num", "4"]
                + [a for o in overrides for a in ("--set", o)]) == 0
    coco = COCO(str(synth_data / "train" / "annotations.json"))
    blended = 0
    for image in coco.dataset["images"][:4]:
        original = np.asarray(Image.open(synth_data / "train" / "images" / image["file_name"]).convert("RGB"))
        with Image.open(tmp_path / "masks" / image["file_name"]) as im:
            drawn = np.asarray(im.convert("RGB")).astype(np.float64)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
        masks = np.stack([coco.annToMask(a) for a in anns])[:, :, ::-1].astype(bool)  # flipped
        # pixels clear of every box outline and label (a line of text under the top-left corner)
        clear = np.ones((64, 64), dtype=bool)
        for x, y, w, h in (a["bbox"] for a in anns):
            x1, y1, x2, y2 = round(64 - x - w), round(y), round(64 - x), round(y + h)
            clear[max(y1 - 2, 0) : y1 + 14, max(x1 - 2, 0) : x1 + 50] = False
            for edge in (x1, x2):
                clear[:, max(edge - 2, 0) : edge + 3] = False
            for edge in (y1, y2):
                clear[max(edge - 2, 0) : edge + 3, :] = False
        for ann, mask in zip(anns, masks):
            # a pixel inside this object's mask alone: blended half and half with its class colour
            ys, xs = np.nonzero(mask & (masks.sum(0) == 1) & clear)
            if len(ys):
                y, x = ys[len(ys) // 2], xs[len(xs) // 2]
                expected = 0.5 * original[y, 63 - x] + 0.5 * np.array(PALETTE[ann["category_id"] - 1])
                assert np.abs(drawn[y, x] - expected).max() <= 1.0, (image, ann, y, x)
                blended += 1
    assert blended >= 2

    config = str(TESTS / "configs" / "tiny_keypoint_rcnn.py")
    overrides = [*data_overrides(synth_people), "data.flip_prob=0.0", "data.train_scales=[64]"]
    assert main(["browse", config, "--out", str(tmp_path / "people"), "--num", "2"]
                + [a for o in overrides for a in ("--set", o)]) == 0
    people = COCO(str(synth_people / "train" / "annotations.json"))
    hits = total = 0
    for image in people.dataset["images"][:2]:
        with Image.open(tmp_path / "people" / image["file_name"]) as im:
            drawn = np.asarray(im.convert("RGB"))
        for ann in people.loadAnns(people.getAnnIds(imgIds=image["id"])):
            for x, y, _ in np.reshape(ann["keypoints"], (-1, 3)):
                total += 1
                hits += bool((drawn[round(y), round(x)] == PALETTE[0]).all())
    assert total >= 17 and hits >= 0.8 * total  # dots of the class colour at the keypoints


# Three categories (circle, square: supercategory shape; person), two 200 x 200 images.
_CATEGORIES = [{"id": 1, "name": "circle", "supercategory": "shape"},
               {"id": 2, "name": "square", "supercategory": "shape"},
               {"id": 3, "name": "person", "supercategory": "person"}]
_OBJECTS = [  # (id, image, category, xywh)
    (1, 1, 1, [10, 10, 30, 30]), (2, 1, 2, [60, 10, 30, 30]), (3, 1, 3, [10, 60, 30, 40]),
    (4, 2, 1, [10, 10, 40, 40]), (5, 2, 1, [100, 100, 30, 30]), (6, 2, 2, [60, 10, 30, 30]),
    (7, 2, 3, [10, 120, 30, 60]), (8, 1, 1, [150, 150, 20, 20]),
]
# Detections of circle, one of each kind of error, in score order; squares and a person.
_DETECTIONS = [  # (image, category, xywh, score)
    (1, 1, [10, 10, 30, 30], 0.95),   # true positive at every IoU
    (1, 1, [100, 100, 30, 30], 0.90),  # background
    (2, 1, [10, 10, 40, 26], 0.85),   # IoU 0.65 with object 4: a true positive at 0.5, not at 0.75
    (1, 1, [60, 10, 30, 30], 0.80),   # on the square (same supercategory)
    (1, 1, [10, 60, 30, 40], 0.75),   # on the person (another supercategory)
    (2, 1, [100, 112, 30, 40], 0.70),  # IoU 0.3 with object 5: a true positive at IoU 0.1 only
    (1, 2, [60, 10, 30, 30], 0.9), (2, 2, [60, 10, 30, 30], 0.8),
    (1, 3, [10, 60, 30, 40], 0.9), (2, 3, [10, 10, 40, 40], 0.8),  # a person on circle 4
]  # fmt: skip


def _polygon(x, y, w, h):
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


@pytest.fixture
def analysis_inputs(tmp_path):
    gt = {
        "images": [{"id": i, "file_name": f"{i}.png", "width": 200, "height": 200} for i in (1, 2)],
        "categories": _CATEGORIES,
        "annotations": [{"id": i, "image_id": im, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": 0,
                         "segmentation": _polygon(*b)} for i, im, c, b in _OBJECTS],
    }
    results = []
    for image, category, box, score in _DETECTIONS:
        rle = mask_utils.merge(mask_utils.frPyObjects(_polygon(*box), 200, 200))
        rle["counts"] = rle["counts"].decode("ascii")
        results.append({"image_id": image, "category_id": category, "bbox": box, "score": score, "segmentation": rle})
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "results.json").write_text(json.dumps(results))
    return tmp_path / "gt.json", tmp_path / "results.json"


def _table(path):
    with open(path) as f:
        return {row["category"]: {k[:-4]: float(v) if v else None for k, v in row.items() if k != "category"}
                for row in csv.DictReader(f)}  # fmt: skip


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_analyze_per_category_ap_and_error_breakdown(analysis_inputs, tmp_path, capsys, iou_type):
    ann, results = analysis_inputs
    assert main(["analyze", str(results), "--ann", str(ann), "--out", str(tmp_path / "out"), "--type", iou_type]) == 0
    assert "AP per category" in capsys.readouterr().out
    out = tmp_path / "out" / iou_type

    # per-category AP: COCOeval's precision averaged over the entries with ground truth
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann))
        coco_eval = COCOeval(gt, gt.loadRes(str(results)), iou_type)
        coco_eval.evaluate()
        coco_eval.accumulate()
    ap = _table(out / "per_category.csv")
    for k, name in enumerate(["circle", "square", "person"]):
        p = coco_eval.eval["precision"][:, :, k, 0, -1]
        assert ap[name]["AP"] == pytest.approx(100 * p[p > -1].mean(), abs=1e-3)
        p50 = coco_eval.eval["precision"][0, :, k, 0, -1]
        assert ap[name]["AP50"] == pytest.approx(100 * p50.mean(), abs=1e-3)
    assert ap["square"]["AP"] == 100.0  # both squares found exactly
    assert ap["person"]["APs"] is None  # no small person (area < 32^2): no value
    assert "| square | 100.0 | 100.0 | 100.0 | 100.0 | - | - |" in (out / "per_category.md").read_text()

    errors = _table(out / "errors.csv")
    assert list(errors) == [ALL_CLASSES, "circle", "square", "person"]
    for name, row in errors.items():
        values = [row[t] for t in ERROR_TYPES]
        assert values == sorted(values) and values[-1] == 100.0, (name, row)
    circle = [errors["circle"][t] for t in ERROR_TYPES]
    assert all(a < b for a, b in zip(circle, circle[1:])), circle  # each error kind removed lifts the curve
    assert errors["circle"]["C50"] == pytest.approx(ap["circle"]["AP50"], abs=1e-3)
    assert errors["person"]["Sim"] == errors["person"]["Loc"]  # alone in its supercategory
    # circle, 4 objects: found 1 of 4 at IoU .75, 2 at .5 (after the background one), 3 at IoU .1
    # (3/6 precision, 3/5 without the square confusion, 3/4 without the person one); BG: 1 up to recall 3/4
    assert errors["circle"]["C75"] == pytest.approx(100 * 26 / 101, abs=1e-3)
    assert errors["circle"]["BG"] == pytest.approx(100 * 76 / 101, abs=1e-3)
    assert errors["circle"]["Oth"] == pytest.approx(100 * (26 + 50 * 0.75) / 101, abs=1e-3)

    for png in [out / "pr_all_classes.png", *(out / "pr_curves" / f"{n}.png" for n in ("circle", "square", "person"))]:
        with Image.open(png) as im:
            assert im.format == "PNG" and im.size == (720, 640)


def test_analyze_bad_input_is_one_line_naming_the_file(analysis_inputs, tmp_path, capsys):
    ann, results = analysis_inputs
    bad = tmp_path / "bad.json"
    for content, message in (
        ("[{", f"{bad}: not JSON"),
        ('{"a": 1}', f"{bad}: expected a list of COCO result objects"),
        ('[{"image_id": 1, "bbox": [0, 0, 1, 1], "score": 1}]', f"{bad}: result 0 has no category_id"),
        ('[{"image_id": 9, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}]', "image_id values [9]"),
    ):
        bad.write_text(content)
        assert main(["analyze", str(bad), "--ann", str(ann), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("detzoo analyze: error: ") and message in err and "\n" not in err, err
    assert main(["analyze", str(results), "--ann", str(results), "--out", str(tmp_path / "o")]) == 2
    assert f"{results}: not a COCO annotation file" in capsys.readouterr().err
