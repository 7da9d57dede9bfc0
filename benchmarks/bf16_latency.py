"""bf16 inference (``runtime.amp='bf16'``: CPU autocast) next to fp32, in one run on the
same weights, images and threads: torchvision's Faster R-CNN R-50-FPN as
benchmarks/compare_toolboxes.py builds it (seeded, frozen-BN statistics calibrated, converted
by ``detzoo convert --from torchvision``), loaded twice, timed with compare_toolboxes'
alternating rounds (``Detector.predict`` from the decoded image), and how far the bf16
detections are from the fp32 ones (each fp32 detection against the bf16 one of its label
with the nearest box). The AP change of bf16 needs a trained model: README gives it for
models trained here (``detzoo test ... --set runtime.amp="'bf16'"``).

    .venv/bin/python benchmarks/bf16_latency.py --threads 2 --warmup 1 --runs 3
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import detzoo  # noqa: E402
from compare_toolboxes import IMAGES, MODELS, Side, alternate, decode, set_process, torchvision_side  # noqa: E402
from common import nearest_twins  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="faster", choices=["faster", "mask", "keypoint", "retinanet"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    set_process(args.threads, tf32=False)
    device = torch.device("cpu")
    images = [decode(p) for p in IMAGES]
    with tempfile.TemporaryDirectory() as tmp:
        _, fp32, weights = torchvision_side(args.family, images, Path(tmp), device)
        bf16 = detzoo.load_model(MODELS[args.family][1], weights["detzoo"], overrides=["runtime.amp='bf16'"])
        sides = [Side(name=name, inputs=images, call=lambda rgb, d=d: d.predict(rgb)[0],
                      numpy=lambda out: {k: out[k] for k in ("boxes", "scores", "labels")})
                 for name, d in (("fp32", fp32), ("bf16", bf16))]
        times, outputs = alternate(sides, warmup=args.warmup, runs=args.runs, device=device)
    seconds = {name: float(np.median(t)) for name, t in times.items()}
    pairs = [nearest_twins(b, f) for b, f in zip(outputs["bf16"], outputs["fp32"])]
    box, score = (np.concatenate(d) for d in zip(*pairs))
    record = {
        "family": args.family, "threads": args.threads, "s_per_image": seconds,
        "speedup_bf16": seconds["fp32"] / seconds["bf16"],
        "detections_fp32_bf16": [[len(f["boxes"]), len(b["boxes"])] for f, b in zip(outputs["fp32"], outputs["bf16"])],
        "median_box_px": float(np.median(box[np.isfinite(box)])),
        "median_score": float(np.median(score[np.isfinite(score)])),
        "unmatched": int((~np.isfinite(box)).sum()),
    }
    print(json.dumps(record, indent=1))
    if args.json:
        args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
