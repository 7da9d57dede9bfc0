"""How much of a small-image training iteration is convolution and matrix products, for
detzoo and torchvision side by side: benchmarks/train_synthetic.py's R-18-FPN Faster R-CNN
(128 px, batch 8) trained for a few iterations under torch's profiler, rounds alternating.
At equal convolution and matrix FLOPs, detzoo's s/iter cannot fall below its own
conv + matmul time, so ``conv_detzoo / total_torchvision`` bounds the ratio from below.

    .venv/bin/python benchmarks/train_compute_share.py --threads 2 --iters 4 --rounds 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from detzoo.allocator import retain_freed_memory
from detzoo.data.build import build_dataset, model_targets
from detzoo.data.loader import build_train_loader
from detzoo.detectors.build import build_model
from train_synthetic import synthetic_config, torchvision_model

COMPUTE = ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::_slow_conv2d_forward",
           "aten::_slow_conv2d_backward", "aten::mm", "aten::addmm", "aten::bmm")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--iters", type=int, default=4, help="profiled iterations per round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per toolbox, the order alternating")
    args = parser.parse_args()
    retain_freed_memory()  # as detzoo's commands
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        cfg, _ = synthetic_config(Path(tmp), 100, train_images=8 * (args.iters + 1), val_images=1)
        torch.manual_seed(0)
        model = build_model(cfg["model"]).train()
        reference = torchvision_model(cfg).train()
        dataset = build_dataset(cfg["data"], "train", model.pixel_format, train=True, seed=0,
                                **model_targets(model.outputs))
        batches = list(build_train_loader(dataset, batch_size=8, num_workers=0, seed=0))[: args.iters + 1]

    def step(optimizer, losses):
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()

    sides = {}
    for name, net in (("detzoo", model), ("torchvision", reference)):
        optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
        if name == "detzoo":
            sides[name] = lambda s, net=net, o=optimizer: step(
                o, net([x.image for x in s], [x.instances for x in s]))
        else:  # torchvision: 0-1 images, labels from 1
            sides[name] = lambda s, net=net, o=optimizer: step(o, net(
                [x.image / 255 for x in s],
                [{"boxes": x.instances.boxes, "labels": x.instances.labels + 1} for x in s]))
        sides[name](batches[0])  # warm-up
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
    order = list(sides)
    for round_ in range(args.rounds):
        for name in order if round_ % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for samples in batches[1:]:
                    sides[name](samples)
            wall = (time.perf_counter() - start) / args.iters
            events = prof.key_averages()
            total = sum(e.self_cpu_time_total for e in events)
            compute = sum(e.self_cpu_time_total for e in events if e.key in COMPUTE)
            figures[name].append((wall, wall * compute / total))
    for name, rows in figures.items():
        wall, compute = (float(np.median(column)) for column in zip(*rows))
        print(f"{name:12s} {wall:.3f} s/iter, conv + matmul {compute:.3f} s ({100 * compute / wall:.0f}%)")
    (dz_wall, dz_compute), (tv_wall, _) = ([float(np.median(c)) for c in zip(*figures[n])] for n in order)
    print(f"ratio detzoo / torchvision {dz_wall / tv_wall:.2f}; with nothing but detzoo's conv + matmul it would be "
          f"{dz_compute / tv_wall:.2f}")


if __name__ == "__main__":
    main()
