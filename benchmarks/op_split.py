"""Where a forward's time goes by kind of op, and how close each kind runs to the conv peak:
the ceiling of a model's share of the peak in eager PyTorch.

Per model (torchvision's seeded Faster, Mask, Keypoint R-CNN and RetinaNet R-50-FPN,
converted into detzoo as benchmarks/compare_toolboxes.py builds them) and precision (fp32;
bf16 through ``runtime.amp``), on the three test images at 800 px, batch 1,
``Detector.predict`` from the decoded image:

- **s/img**: the median of ``--runs`` rounds over the images after ``--warmup``, unprofiled;
- **FLOPs by kind**: ``FlopCounterMode`` over one predict of each image (1 multiply-add = 2
  FLOPs): convolutions and matrix products (addmm, mm, bmm), mean over the images;
- **time by kind**: one more round under ``torch.profiler``, the ops' self times (on the
  calling thread, which waits for its intra-op threads): "conv" every op whose name holds
  ``convolution`` (oneDNN's kernel and its wrappers), "matmul" addmm / mm / bmm, "other" every
  other op (elementwise ops, RoIAlign, NMS, resizing, copies); the Python between the ops is
  in no op, so scaling the shares to s/img (below) spreads it over the kinds;
- **% of the conv peak**, against the peak of the precision's dtype measured in the same run
  (``detzoo.tools.benchmark.ConvPeakSampler``, sampled before each model and precision and
  ``--peak-calls`` times at the end; the best sample): the model's (all FLOPs / s/img); the
  convolutions' own (their FLOPs / their time) and the matrix products' own, a kind's time
  being its share of the profiled time times s/img; and the ceiling: the model's share if
  every other op took no time (all FLOPs / (conv + matmul time)).

    .venv/bin/python benchmarks/op_split.py --threads 2 --json benchmarks/results/op_split.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.profiler import profile
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))

import detzoo  # noqa: E402
from compare_toolboxes import IMAGES, MODELS, Side, alternate, decode, set_process, torchvision_side  # noqa: E402
from detzoo.tools.benchmark import ConvPeakSampler, environment  # noqa: E402

FAMILIES = ("faster", "mask", "keypoint", "retinanet")
MATMULS = ("addmm", "mm", "bmm")


def kind_of(op: str) -> str:
    """"conv", "matmul" or "other", for a profiler key (``aten::...``) or a FLOP counter op name."""
    name = op.replace("::", ".").split(".")[1] if op.startswith("aten") else op  # aten::addmm, aten.addmm
    if "convolution" in name:
        return "conv"
    return "matmul" if name in MATMULS else "other"


def flops_by_kind(detector: detzoo.Detector, images: list[np.ndarray]) -> dict[str, float]:
    """Mean FLOPs of one predict per image, by kind."""
    total = {"conv": 0.0, "matmul": 0.0, "other": 0.0}
    for image in images:
        with FlopCounterMode(display=False) as counter:
            detector.predict(image)
        for op, flops in counter.get_flop_counts()["Global"].items():
            total[kind_of(str(op))] += flops
    return {kind: flops / len(images) for kind, flops in total.items()}


def seconds_by_kind(detector: detzoo.Detector, images: list[np.ndarray]) -> dict[str, float]:
    """Mean profiled self seconds of the ops per image, by kind, and their total."""
    with profile() as prof:
        for image in images:
            detector.predict(image)
    spent = {"conv": 0.0, "matmul": 0.0, "other": 0.0}
    for event in prof.key_averages():
        spent[kind_of(event.key)] += event.self_cpu_time_total / 1e6
    return {**{k: v / len(images) for k, v in spent.items()}, "total": sum(spent.values()) / len(images)}


def measure(detector: detzoo.Detector, images: list[np.ndarray], *, warmup: int, runs: int) -> dict:
    side = Side("detzoo", images, detector.predict, lambda out: out)
    times, _ = alternate([side], warmup=warmup, runs=runs, device=torch.device("cpu"))
    s_img = float(np.median(times["detzoo"]))
    with torch.inference_mode():
        flops = flops_by_kind(detector, images)
        seconds = seconds_by_kind(detector, images)
    return {"s_img": s_img, "gflops": {k: v / 1e9 for k, v in flops.items()}, "profiled_s": seconds}


def shares(row: dict, peak: float) -> dict[str, float]:
    """% of ``peak`` (GFLOP/s): the model's, each kind's own, and the ceiling; each kind's
    seconds are its share of the profiled time times the unprofiled s/img."""
    gflops, spent = row["gflops"], row["profiled_s"]
    seconds = {kind: spent[kind] / spent["total"] * row["s_img"] for kind in ("conv", "matmul")}
    total = sum(gflops.values())
    return {
        "model": 100 * total / row["s_img"] / peak,
        "conv": 100 * gflops["conv"] / seconds["conv"] / peak,
        "matmul": 100 * gflops["matmul"] / seconds["matmul"] / peak if seconds["matmul"] else float("nan"),
        "ceiling": 100 * total / (seconds["conv"] + seconds["matmul"]) / peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument("--precisions", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--peak-calls", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    retained = set_process(args.threads, tf32=False)
    device = torch.device("cpu")
    sampler = ConvPeakSampler(device, ("fp32", "bf16"))
    images = [decode(p) for p in IMAGES]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families:
            _, fp32, weights = torchvision_side(family, images, Path(tmp), device)
            for precision in args.precisions:
                detector = fp32 if precision == "fp32" else detzoo.load_model(
                    MODELS[family][1], weights["detzoo"], overrides=[f"runtime.amp='{precision}'"])
                sampler.sample()
                rows.append({"family": family, "precision": precision,
                             **measure(detector, images, warmup=args.warmup, runs=args.runs)})
                print(f"{family} {precision}: {rows[-1]['s_img']:.3f} s/img", flush=True)
    sampler.sample(args.peak_calls)
    peak = sampler.peak()
    print(f"conv peak GFLOP/s: fp32 {peak.gflops_s['fp32']:.1f}, bf16 {peak.gflops_s['bf16']:.1f} "
          f"({peak.calls} samples)")  # fmt: skip
    print("| model | precision | s/img | GFLOPs conv / matmul / other | time % conv / matmul / other "
          "| % of peak: model / conv / matmul / ceiling |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        row["peak_share"] = shares(row, peak.gflops_s[row["precision"]])
        g, s, p = row["gflops"], row["profiled_s"], row["peak_share"]
        print(f"| {row['family']} | {row['precision']} | {row['s_img']:.3f} "
              f"| {g['conv']:.1f} / {g['matmul']:.1f} / {g['other']:.2f} "
              f"| {100 * s['conv'] / s['total']:.0f} / {100 * s['matmul'] / s['total']:.0f} / "
              f"{100 * s['other'] / s['total']:.0f} "
              f"| {p['model']:.0f} / {p['conv']:.0f} / {p['matmul']:.0f} / {p['ceiling']:.0f} |")
    if args.json:
        record = {"command": shlex.join([".venv/bin/python", "benchmarks/op_split.py", *sys.argv[1:]]),
                  "environment": environment(device), "freed_memory_retained": retained,
                  "peak": {"gflops_s": peak.gflops_s, "calls": peak.calls, "notes": peak.notes}, "rows": rows}
        args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
