"""Training learns, resumes exactly, and the trained checkpoint serves load_model/predict."""

import json

import numpy as np
import pytest
import torch

import detzoo.engine.trainer as trainer
from detzoo.api import load_model
from detzoo.engine.checkpoint import load_checkpoint
from tests.conftest import tiny_config


def _losses(work_dir):
    return [json.loads(line)["loss"] for line in (work_dir / "log.jsonl").read_text().splitlines() if "loss" in line]


def test_training_loss_falls_and_model_predicts(synth_data, tmp_path):
    cfg = tiny_config(synth_data)
    metrics = trainer.train(cfg, work_dir=tmp_path)
    losses = _losses(tmp_path)
    assert len(losses) == 8  # 40 iterations, logged every 5
    assert np.mean(losses[-2:]) < 0.6 * np.mean(losses[:2]), losses
    assert set(metrics) == {"bbox"} and set(metrics["bbox"]) >= {"AP", "AP50", "AR100"}

    detector = load_model(checkpoint=tmp_path / trainer.FINAL)
    assert detector.class_names == ["circle", "square", "triangle"]
    image = (np.random.default_rng(0).random((50, 70, 3)) * 255).astype(np.uint8)
    (pred,) = detector.predict(image)
    assert pred["boxes"].shape[1] == 4
    if len(pred["boxes"]):  # boxes are in the 70 x 50 original image
        assert pred["boxes"][:, [0, 2]].max() <= 70 + 1e-3 and pred["boxes"][:, [1, 3]].max() <= 50 + 1e-3


# The keypoint loss starts at log(56 * 56) = 8 and dominates the total; it falls slower.
@pytest.mark.parametrize("name, data, extra, ratio", [("tiny_mask_rcnn", "synth_data", "segm", 0.7),
                                                      ("tiny_keypoint_rcnn", "synth_people", "keypoints", 0.85)])
def test_mask_and_keypoint_models_learn_and_predict(name, data, extra, ratio, request, tmp_path):
    metrics = trainer.train(tiny_config(request.getfixturevalue(data), name=name), work_dir=tmp_path)
    losses = _losses(tmp_path)
    assert np.mean(losses[-2:]) < ratio * np.mean(losses[:2]), losses
    assert set(metrics) == {"bbox", extra}
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    branch_loss = "loss_mask" if extra == "segm" else "loss_keypoint"
    assert log[-2][branch_loss] < log[0][branch_loss]

    detector = load_model(checkpoint=tmp_path / trainer.FINAL)
    image = (np.random.default_rng(0).random((50, 70, 3)) * 255).astype(np.uint8)
    (pred,) = detector.predict(image)
    n = len(pred["boxes"])
    if extra == "segm":
        assert pred["masks"].shape == (n, 50, 70) and pred["masks"].dtype == bool
    else:
        assert pred["keypoints"].shape == (n, 17, 3)


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(synth_data, tmp_path, monkeypatch):
    overrides = ("schedule={'iters': 6, 'steps': (4,)}", "runtime.checkpoint_interval=3")
    trainer.train(tiny_config(synth_data, *overrides), work_dir=tmp_path / "full")

    real_loader = trainer.build_train_loader
    seen = {"batches": 0}

    class CrashingLoader:
        def __init__(self, *args, **kwargs):
            self.loader = real_loader(*args, **kwargs)

        def __len__(self):
            return len(self.loader)

        def __iter__(self):
            for batch in self.loader:
                if seen["batches"] == 3:
                    raise KeyboardInterrupt("simulated crash after iteration 3")
                seen["batches"] += 1
                yield batch

    monkeypatch.setattr(trainer, "build_train_loader", CrashingLoader)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(tiny_config(synth_data, *overrides), work_dir=tmp_path / "resumed")
    monkeypatch.setattr(trainer, "build_train_loader", real_loader)
    assert load_checkpoint(tmp_path / "resumed" / trainer.CHECKPOINT)["iteration"] == 3
    trainer.train(tiny_config(synth_data, *overrides), work_dir=tmp_path / "resumed", resume=True)

    full = load_checkpoint(tmp_path / "full" / trainer.CHECKPOINT)
    resumed = load_checkpoint(tmp_path / "resumed" / trainer.CHECKPOINT)
    assert resumed["iteration"] == full["iteration"] == 6
    for key, value in full["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, rtol=0, atol=0, msg=key)
    assert _losses(tmp_path / "resumed")[-1] == pytest.approx(_losses(tmp_path / "full")[-1])


def test_c4_mask_rcnn_learns(synth_data, tmp_path):
    metrics = trainer.train(tiny_config(synth_data, name="tiny_mask_rcnn_c4"), work_dir=tmp_path)
    losses = _losses(tmp_path)
    assert np.mean(losses[-2:]) < 0.7 * np.mean(losses[:2]), losses
    assert set(metrics) == {"bbox", "segm"}
    state = load_checkpoint(tmp_path / trainer.FINAL)["model"]
    assert not any(k.startswith("backbone.layer4") for k in state)  # res5 is in the RoI head
    assert any(k.startswith("roi_heads.box_head.res5.") for k in state)


def test_rpn_proposals_feed_fast_rcnn(synth_data, tmp_path):
    """Train an RPN, write its proposals for both splits with `detzoo test --out`, then
    train and evaluate Fast R-CNN on those files."""
    from detzoo.cli import main

    rpn_dir = tmp_path / "rpn"
    metrics = trainer.train(tiny_config(synth_data, name="tiny_rpn"), work_dir=rpn_dir)
    assert set(metrics) == {"proposals"} and metrics["proposals"]["AR@100"] > 0.05, metrics
    files = {}
    for split in ("train", "val"):
        files[split] = tmp_path / f"proposals_{split}.npz"
        args = [f"data.val.ann_file={synth_data / split / 'annotations.json'}",
                f"data.val.img_dir={synth_data / split / 'images'}"]
        assert main(["test", "tests/configs/tiny_rpn.py", str(rpn_dir / trainer.FINAL), "--out", str(files[split]),
                     *[a for o in args for a in ("--set", o)]]) == 0
    fast = tiny_config(
        synth_data,
        *[f"data.{split}.proposals_file={files[split]}" for split in ("train", "val")],
        name="tiny_fast_rcnn",
    )
    metrics = trainer.train(fast, work_dir=tmp_path / "fast")
    losses = _losses(tmp_path / "fast")
    assert np.mean(losses[-2:]) < 0.7 * np.mean(losses[:2]), losses
    assert set(metrics) == {"bbox"}


def test_periodic_evaluation_does_not_change_training(synth_data, tmp_path):
    overrides = ("schedule={'iters': 6, 'steps': (4,)}",)
    trainer.train(tiny_config(synth_data, *overrides, "runtime.eval_interval=0"), work_dir=tmp_path / "a")
    trainer.train(tiny_config(synth_data, *overrides, "runtime.eval_interval=2"), work_dir=tmp_path / "b")
    a = load_checkpoint(tmp_path / "a" / trainer.FINAL)["model"]
    b = load_checkpoint(tmp_path / "b" / trainer.FINAL)["model"]
    for key, value in a.items():
        torch.testing.assert_close(b[key], value, rtol=0, atol=0, msg=key)
