"""The figures behind README's "Proven against mmdetection": for every row of
tests/test_parity_mmdet.py, the largest box, score and feature differences between
mmdetection's own inference and detzoo after `detzoo convert --from mmdet`, on the
test images (the test asserts the tolerances; this prints what was measured).

    .venv/bin/python benchmarks/parity_mmdet.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # devtools

import detzoo  # noqa: E402
from detzoo.cli import main as cli  # noqa: E402
from devtools.reference_models import (  # noqa: E402
    MMDET_IMAGES,
    MMDET_ROWS,
    coco_classes,
    conditioned_mmdet_model,
    mmdet_features,
    mmdet_predict,
    save_mmdet_checkpoint,
)
from common import nearest_twins  # noqa: E402


def converted_pair(config: str, tmp: Path) -> tuple[torch.nn.Module, detzoo.api.Detector]:
    """mmdetection's model of the row ``config`` (seeded, conditioned weights, as the test
    builds it) and detzoo's after ``detzoo convert --from mmdet`` of its checkpoint (files in ``tmp``)."""
    reference = conditioned_mmdet_model(MMDET_ROWS[config], tmp)
    src, dst = tmp / f"{config}_mmdet.pth", tmp / f"{config}.pth"
    save_mmdet_checkpoint(reference, src, coco_classes())
    assert cli(["convert", "--from", "mmdet", str(src), "--config", config, "--out", str(dst)]) == 0
    return reference, detzoo.load_model(config, checkpoint=dst)


def measure(config: str, tmp: Path) -> dict:
    reference, detector = converted_pair(config, tmp)
    inputs, theirs = mmdet_features(reference, MMDET_IMAGES[0])
    with torch.no_grad():
        ours = detector.model.neck(detector.model.backbone(inputs))
    row = {"features": max(float((a - b).abs().max()) for a, b in zip(ours.values(), theirs)),
           "detections": [], "box": 0.0, "score": 0.0, "labels_equal": True}
    for o, t in zip(detector.predict(MMDET_IMAGES), mmdet_predict(reference, MMDET_IMAGES)):
        t = {"boxes": t["bboxes"], **t}
        row["detections"].append((len(o["boxes"]), len(t["boxes"])))
        # detections whose scores tie to rounding may come in either order: each of mmdet's
        # against detzoo's of its label with the nearest box
        row["labels_equal"] &= bool(np.array_equal(np.sort(o["labels"]), np.sort(t["labels"])))
        box, score = nearest_twins(o, t)
        row["box"] = max(row["box"], float(box.max(initial=0)))
        row["score"] = max(row["score"], float(score.max(initial=0)))
    return row


def main() -> None:
    print("| detzoo config | detections per image (detzoo / mmdet) | labels equal (as sets) | max box diff (px) | "
          "max score diff | max feature diff |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for config in MMDET_ROWS:
            r = measure(config, Path(tmp))
            dets = ", ".join(f"{a}/{b}" for a, b in r["detections"])
            print(f"| {config} | {dets} | {r['labels_equal']} | {r['box']:.2g} | {r['score']:.2g} | "
                  f"{r['features']:.2g} |", flush=True)


if __name__ == "__main__":
    main()
