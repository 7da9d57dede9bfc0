"""onnxruntime's CPU latency next to PyTorch's, for the same detector on the same images
and threads: Faster R-CNN R-50-FPN (``faster_rcnn_r50_fpn_1x_coco``, 800-pixel shorter side,
at most 1333) with torchvision's layout of random weights converted by ``detzoo convert
--from torchvision`` (as devtools/reference_models.py builds them, frozen-BN statistics
calibrated on the first image, as in a trained model: with random statistics activations
grow layer after layer, and so do the rounding differences between the two backends'
kernels), exported by ``detzoo export onnx`` (traced
at 800 x 1333).

Each timed run is ``model(images, original_sizes=...)`` on one image after the test
transform, for both backends the same call: the network with its NMS, then the Python
post-processing (Detectron's X + Y; reading and resizing not timed). Rounds alternate the
backends (even rounds PyTorch first, odd rounds onnxruntime first) and cycle over the
images; the first ``--warmup`` rounds are not counted. Also printed: how far the two
backends' detections are apart (each onnxruntime detection against PyTorch's of the same
class with the nearest box), and the load of the machine, which other jobs may share.

    .venv/bin/python benchmarks/onnx_latency.py --threads 2 --warmup 3 --runs 5 \\
        --json benchmarks/results/onnx_latency_faster_rcnn_r50_fpn_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # devtools

import detzoo  # noqa: E402
from detzoo.cli import main as cli  # noqa: E402
from detzoo.data.images import read_image  # noqa: E402
from detzoo.export.onnx import load_onnx_detector  # noqa: E402
from devtools.reference_models import IMAGES, torchvision_model  # noqa: E402
from common import nearest_twins  # noqa: E402

CONFIG = "faster_rcnn_r50_fpn_1x_coco"


def cpu_seconds() -> float:
    """CPU time of this process (all its threads) so far."""
    t = os.times()
    return t.user + t.system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads of both backends")
    parser.add_argument("--warmup", type=int, default=3, help="rounds run but not timed")
    parser.add_argument("--runs", type=int, default=5, help="timed rounds")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.save(torchvision_model("faster").state_dict(), tmp / "torchvision.pth")
        ckpt, onnx_file = tmp / "converted.pth", tmp / "model.onnx"
        assert cli(["convert", "--from", "torchvision", str(tmp / "torchvision.pth"), "--config", CONFIG,
                    "--out", str(ckpt)]) == 0
        start = time.perf_counter()
        assert cli(["export", "onnx", CONFIG, str(ckpt), "--out", str(onnx_file)]) == 0
        export_s = time.perf_counter() - start
        onnx_mb = onnx_file.stat().st_size / 1e6
        backends = {
            "pytorch": detzoo.load_model(CONFIG, ckpt),
            "onnxruntime": load_onnx_detector(CONFIG, onnx_file, threads=args.threads),
        }
        images = [read_image(p) for p in IMAGES]
        inputs = [backends["pytorch"].transform(im)[0] for im in images]
        sizes = [tuple(im.shape[-2:]) for im in images]
        times = {name: [] for name in backends}
        outputs = {name: {} for name in backends}
        load_before, cpu_before, wall_before = os.getloadavg(), cpu_seconds(), time.perf_counter()
        with torch.no_grad():
            for round_ in range(args.warmup + args.runs):
                i = round_ % len(images)
                order = list(backends) if round_ % 2 == 0 else list(backends)[::-1]
                for name in order:
                    start = time.perf_counter()
                    (result,) = backends[name].model([inputs[i]], original_sizes=[sizes[i]])
                    elapsed = time.perf_counter() - start
                    if round_ >= args.warmup:
                        times[name].append(elapsed)
                    outputs[name][i] = {k: getattr(result, k).numpy() for k in ("boxes", "scores", "labels")}
        cpu_used, wall = cpu_seconds() - cpu_before, time.perf_counter() - wall_before
        load_after = os.getloadavg()

    agreement = {"detections_pytorch_onnxruntime": [], "max_box_px": 0.0, "max_score": 0.0,
                 "within_1e-2px_1e-3": 0}
    for i in sorted(outputs["pytorch"]):
        ours, theirs = outputs["pytorch"][i], outputs["onnxruntime"][i]
        box, score = nearest_twins(ours, theirs)
        agreement["detections_pytorch_onnxruntime"].append([len(ours["boxes"]), len(theirs["boxes"])])
        agreement["max_box_px"] = max(agreement["max_box_px"], float(box.max(initial=0)))
        agreement["max_score"] = max(agreement["max_score"], float(score.max(initial=0)))
        agreement["within_1e-2px_1e-3"] += int(((box <= 1e-2) & (score <= 1e-3)).sum())
    record = {
        "command": shlex.join([".venv/bin/python", "benchmarks/onnx_latency.py", *sys.argv[1:]]),
        "config": CONFIG,
        "weights": "torchvision layout, seeded random (devtools/reference_models.py), detzoo convert "
                   "--from torchvision, frozen-BN statistics calibrated on the first image",
        "images": [f"{Path(p).name} {s[0]}x{s[1]} -> {x.shape[-2]}x{x.shape[-1]}"
                   for p, s, x in zip(IMAGES, sizes, inputs)],
        "threads": args.threads,
        "warmup": args.warmup,
        "runs": args.runs,
        "export_s": export_s,
        "onnx_mb": onnx_mb,
        "seconds": {name: {"mean": float(np.mean(t)), "median": float(np.median(t)), "min": float(np.min(t))}
                    for name, t in times.items()},
        "ratio_onnxruntime_over_pytorch": float(np.mean(times["onnxruntime"]) / np.mean(times["pytorch"])),
        "agreement": agreement,
        "machine": {"cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": load_after,
                    "process_cpu_s": cpu_used, "wall_s": wall},
        "versions": {"torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__},
    }
    print(json.dumps(record, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
