"""Fine-tuning from a trained detector (``detzoo train --load-from``): class rows follow the
classes by name, whatever their order or ids; a subset keeps what the checkpoint knew of
its classes; parts the checkpoint lacks start fresh; the checkpoint's format is told from
its keys."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_config

from detzoo.api import load_model
from detzoo.cli import main
from detzoo.config import dump_config, merge
from detzoo.data.synthetic import data_overrides
from detzoo.detectors.build import build_model
from detzoo.engine.initialize import transfer_weights
from detzoo.errors import CheckpointError
from detzoo.zoo.converters import detect_format

# a tiny RetinaNet on the tiny Faster R-CNN's backbone and neck (sigmoid scores: a class
# subset leaves the other classes' scores as they were)
RETINA = {
    "model": {
        "roi_heads": None,
        "dense_head": {
            "_delete_": True, "type": "retina", "num_classes": 3, "in_features": ["p3", "p4", "p5", "p6"],
            "anchor_generator": {"sizes": [[16], [32], [64], [128]], "aspect_ratios": [0.5, 1.0, 2.0]},
            "head": {"conv_dim": 32, "num_convs": 1},
            "score_thresh": 0.0, "topk_candidates": 10000, "detections_per_image": 10000,  # no cap across classes
        },
    },
}


def _relabelled(root: Path, out: Path, names: list[str], ids: list[int]) -> Path:
    """``root``'s synthetic images with the categories ``names`` only, listed in this order
    with these ids (annotations of other classes dropped); images linked, not copied."""
    for split in ("train", "val"):
        coco = json.loads((root / split / "annotations.json").read_text())
        old = {c["id"]: c["name"] for c in coco["categories"]}
        new = dict(zip(names, ids))
        coco["categories"] = [{"id": i, "name": n, "supercategory": "shape"} for n, i in zip(names, ids)]
        coco["annotations"] = [{**a, "category_id": new[old[a["category_id"]]]} for a in coco["annotations"]
                               if old[a["category_id"]] in new]
        (out / split).mkdir(parents=True)
        (out / split / "annotations.json").write_text(json.dumps(coco))
        (out / split / "images").symlink_to((root / split / "images").resolve())
    return out


def _detections(config: Path, checkpoint: Path, images: list[Path], classes: set[str] | None = None) -> list[tuple]:
    """Per image, the detections of ``classes`` (all by default) as (class name, box, score), by score."""
    model = load_model(config, checkpoint)
    out = []
    for pred in model.predict(images):
        keep = [i for i, n in enumerate(pred["class_names"]) if classes is None or n in classes]
        order = sorted(keep, key=lambda i: -pred["scores"][i])
        out.append([(pred["class_names"][i], pred["boxes"][i], pred["scores"][i]) for i in order])
    return out


def _assert_same(a: list, b: list) -> None:
    assert [len(x) for x in a] == [len(x) for x in b] and sum(map(len, a)) > 0
    for x, y in zip(a, b):
        assert [d[0] for d in x] == [d[0] for d in y]
        np.testing.assert_allclose(np.array([d[1] for d in x]), np.array([d[1] for d in y]), atol=1e-3)
        np.testing.assert_allclose(np.array([d[2] for d in x]), np.array([d[2] for d in y]), atol=1e-5)


def _train(tmp: Path, data: Path, name: str, *extra: str, base: dict | None = None) -> Path:
    """``detzoo train`` of a tiny config on ``data``; returns the work dir (its config.py and model_final.pth)."""
    frozen_bn = {"model": {"backbone": {"norm_eval": True}}, "schedule": {"iters": 6, "steps": (5,)}}
    cfg = merge(merge(tiny_config(data), base or {}), frozen_bn)  # BN statistics stay as trained
    config = tmp / f"{name}.py"
    config.write_text(dump_config(cfg))
    work = tmp / name
    assert main(["train", str(config), "--work-dir", str(work), *extra]) == 0
    return work


@pytest.mark.parametrize("base, subset", [(None, False), (RETINA, False), (RETINA, True)],
                         ids=["faster-reordered", "retina-reordered", "retina-subset"])
def test_finetune_keeps_classes_by_name(tmp_path, synth_data, base, subset):
    trained = _train(tmp_path, synth_data, "trained", base=base)
    names, ids = (["triangle", "circle"], [9, 14]) if subset else (["triangle", "circle", "square"], [10, 20, 30])
    other = _relabelled(synth_data, tmp_path / "other", names, ids)
    if subset:
        base = merge(base, {"model": {"dense_head": {"num_classes": 2}}})
    tuned = _train(tmp_path, other, "tuned", "--load-from", str(trained / "model_final.pth"),
                   "--set", "optim.lr=1e-12", "--set", "optim.weight_decay=0.0", base=base)
    images = sorted((synth_data / "val" / "images").iterdir())[:4]
    before = _detections(trained / "config.py", trained / "model_final.pth", images, set(names))
    after = _detections(tuned / "config.py", tuned / "model_final.pth", images)
    _assert_same(before, after)
    assert load_model(tuned / "config.py", tuned / "model_final.pth").class_names == names


def test_transfer_log_and_fresh_parts(tmp_path, synth_data):
    """Faster R-CNN -> Mask R-CNN: the mask branch starts fresh; a new class's rows are the
    fresh model's; the log line says both, and what went unused."""
    torch.manual_seed(0)
    faster = build_model(tiny_config(synth_data)["model"])
    checkpoint = {"model": faster.state_dict(), "meta": {"class_names": ["circle", "square", "triangle"]}}
    torch.manual_seed(1)
    mask = build_model(tiny_config(synth_data, name="tiny_mask_rcnn")["model"])
    fresh = {k: v.clone() for k, v in mask.state_dict().items()}
    line = transfer_weights(mask, checkpoint, class_names=["square", "hexagon", "circle"], source="faster.pth")
    assert "initialised afresh: roi_heads.mask (not in the checkpoint)" in line
    assert "rows of hexagon (not among the checkpoint's classes)" in line
    state = mask.state_dict()
    logits = state["roi_heads.predictor.cls_score.weight"]
    old = checkpoint["model"]["roi_heads.predictor.cls_score.weight"]
    torch.testing.assert_close(logits[0], old[1])  # square
    torch.testing.assert_close(logits[2], old[0])  # circle
    torch.testing.assert_close(logits[1], fresh["roi_heads.predictor.cls_score.weight"][1])  # hexagon: fresh
    torch.testing.assert_close(logits[3], old[3])  # background
    deltas = state["roi_heads.predictor.bbox_pred.weight"]
    torch.testing.assert_close(deltas[8:12], checkpoint["model"]["roi_heads.predictor.bbox_pred.weight"][0:4])
    torch.testing.assert_close(state["roi_heads.mask.head.predictor.weight"],
                               fresh["roi_heads.mask.head.predictor.weight"])

    back = build_model(tiny_config(synth_data)["model"])  # Mask R-CNN -> Faster R-CNN: the mask branch is unused
    line = transfer_weights(back, {"model": mask.state_dict(), "meta": {"class_names": ["a", "b", "c"]}},
                            class_names=["a", "b", "c"], source="mask.pth")
    assert "unused from the checkpoint: roi_heads.mask." in line

    broken = {k: v for k, v in checkpoint["model"].items() if k != "neck.lateral_convs.0.0.weight"}
    with pytest.raises(CheckpointError, match="missing in a part it has: neck.lateral_convs.0.0.weight"):
        transfer_weights(faster, {"model": broken}, class_names=["a", "b", "c"], source="broken.pth")
    wide = build_model(tiny_config(synth_data, "model.neck.out_channels=64")["model"])
    with pytest.raises(CheckpointError, match="with another shape: neck"):
        transfer_weights(wide, checkpoint, class_names=["circle"], source="faster.pth")


def test_load_from_reads_other_toolboxes_and_refuses_what_it_cannot(tmp_path, synth_data, capsys):
    torch.manual_seed(0)
    model = build_model(tiny_config(synth_data)["model"])
    assert detect_format({"model": model.state_dict()}) == "detzoo"
    assert detect_format({"model": {"backbone.body.conv1.weight": 0}}) == "torchvision"
    assert detect_format({"state_dict": {"backbone.conv1.weight": 0, "rpn_head.rpn_conv.weight": 0}}) == "mmdet"
    assert detect_format({"model": {"backbone.bottom_up.stem.conv1.weight": 0}}) == "detectron2"
    assert detect_format({"blobs": {"conv1_w": 0}}) == "detectron"
    assert detect_format({"weights": 1}) is None

    junk = tmp_path / "junk.pth"
    torch.save({"weights": torch.zeros(1)}, junk)
    sets = [arg for s in data_overrides(synth_data) for arg in ("--set", s)]
    config = Path(__file__).parent / "configs" / "tiny_faster_rcnn.py"
    code = main(["train", str(config), "--work-dir", str(tmp_path / "w"), "--load-from", str(junk), *sets])
    assert code == 2
    err = capsys.readouterr().err
    assert f"{junk} is not a detector checkpoint" in err and "Traceback" not in err
