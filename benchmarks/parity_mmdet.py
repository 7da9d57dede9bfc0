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

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import detzoo  # noqa: E402
from detzoo.cli import main as cli  # noqa: E402
from mmdet_reference import (  # noqa: E402
    build_mmdet_model,
    condition_weights,
    mmdet_features,
    mmdet_predict,
    save_mmdet_checkpoint,
)
from test_parity_mmdet import IMAGES, ROWS, _coco_classes, calibration_image, mask_iou  # noqa: E402


def measure(config: str, tmp: Path) -> dict:
    torch.manual_seed(0)
    reference = build_mmdet_model(ROWS[config])
    condition_weights(reference, calibration_image(tmp))
    src, dst = tmp / f"{config}_mmdet.pth", tmp / f"{config}.pth"
    save_mmdet_checkpoint(reference, src, _coco_classes())
    assert cli(["convert", "--from", "mmdet", str(src), "--config", config, "--out", str(dst)]) == 0
    detector = detzoo.load_model(config, checkpoint=dst)
    inputs, theirs = mmdet_features(reference, IMAGES[0])
    with torch.no_grad():
        ours = detector.model.neck(detector.model.backbone(inputs))
    row = {"features": max(float((a - b).abs().max()) for a, b in zip(ours.values(), theirs)),
           "detections": [], "box": 0.0, "score": 0.0, "labels_equal": True, "mask_iou_min": None}
    for o, t in zip(detector.predict(IMAGES), mmdet_predict(reference, IMAGES)):
        row["detections"].append((len(o["boxes"]), len(t["bboxes"])))
        if len(o["boxes"]) != len(t["bboxes"]):
            continue
        row["labels_equal"] &= bool((o["labels"] == t["labels"]).all())
        row["box"] = max(row["box"], float(np.abs(o["boxes"] - t["bboxes"]).max(initial=0)))
        row["score"] = max(row["score"], float(np.abs(o["scores"] - t["scores"]).max(initial=0)))
        if "masks" in t:
            iou = float(mask_iou(o["masks"], t["masks"]).min())
            row["mask_iou_min"] = iou if row["mask_iou_min"] is None else min(row["mask_iou_min"], iou)
    return row


def main() -> None:
    print("| detzoo config | detections per image (detzoo / mmdet) | labels equal | max box diff (px) | "
          "max score diff | min mask IoU | max feature diff |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for config in ROWS:
            r = measure(config, Path(tmp))
            dets = ", ".join(f"{a}/{b}" for a, b in r["detections"])
            iou = "-" if r["mask_iou_min"] is None else f"{r['mask_iou_min']:.4f}"
            print(f"| {config} | {dets} | {r['labels_equal']} | {r['box']:.2g} | {r['score']:.2g} | {iou} | "
                  f"{r['features']:.2g} |", flush=True)


if __name__ == "__main__":
    main()
