"""detzoo next to the reference toolboxes, measured in one run on the same images, threads
and weights: the seed's "Comparison with Detectron" (003), for torchvision's Faster, Mask and
Keypoint R-CNN and RetinaNet R-50-FPN and mmdetection 3.3's NAS-FPN and FPG models.

Per model, one seeded model of the reference toolbox, converted into detzoo by ``detzoo
convert``, as the parity tests build them (devtools/reference_models.py): torchvision's
(frozen-BN statistics calibrated on the first test image, so that activations keep their
scale as in a trained model), mmdetection's (calibrated on a synthetic picture; mmcv's
compiled ops replaced by torchvision.ops).

- **Conv peaks**: fp32 and bf16, as ``detzoo benchmark`` measures them
  (``detzoo.tools.benchmark.conv_peak``: the best of ``--peak-repeats`` calls of a 3x3
  256->256 convolution on a 1x256x100x168 channels-last map in that dtype); measured at the
  start and again at the end, the higher of the two is the peak. On CUDA everything runs in
  full fp32 unless ``--tf32``. Every process keeps the memory it frees for reuse, as
  detzoo's commands do (``detzoo.allocator``), for both toolboxes alike; ``--malloc default``
  leaves glibc's defaults (blocks above its mmap threshold returned to the system on free).
- **Precisions** (``--precisions``): fp32, and bf16 with both toolboxes under
  ``torch.autocast`` (detzoo through ``runtime.amp="bf16"``, the reference by wrapping its
  call), one table row per model and precision; % of each peak for each.
- **Test size** (``--test-size SHORT MAX``, torchvision's models): in inference both toolboxes resize
  the short side to SHORT, the long one at most MAX, in place of 800 / 1333 (torchvision's
  ``transform.min_size`` / ``max_size``, detzoo's ``data.test_scale`` / ``data.max_size``): for
  precisions whose convolutions this machine only emulates (bf16 without AVX-512 BF16 or AMX).
- **Inference**, batch 1: each timed call goes from the decoded image (HxWx3 uint8, in
  memory: reading the file is not timed) to detections in its pixels. detzoo:
  ``Detector.predict(array)``, its public path (to float, resize, normalise, network,
  post-processing, to numpy); torchvision: ``model([to_tensor(array).to(device)])``, whose
  own transform resizes and normalises; mmdetection: ``inference_detector(model, bgr_array,
  test_pipeline=...)`` with its test pipeline built once. All under ``torch.inference_mode()``.
  ``--warmup`` untimed rounds, then ``--runs`` rounds, each over all the images for one
  toolbox then the other, which one goes first alternating. Reported: the median s/img; the
  GFLOPs of one detzoo forward of each timed image, in fp32
  (``detzoo.tools.benchmark.forward_gflops``, 1 multiply-add = 2 FLOPs), mean over the
  images, and % of the fp32 and of the bf16 conv peak = GFLOPs / (s/img) / peak for each
  toolbox. Counted on the timed images themselves, not on noise of their size: the mask and
  keypoint heads run on the detections, so their work depends on the image (Keypoint R-CNN's
  keypoint head is about 7 GFLOPs per detection). On CUDA, the host synchronisations of one call of each toolbox
  (``torch.cuda.set_sync_debug_mode``: each one warns). Agreement: per
  image the same number of detections and the same labels (as multisets), and for each
  reference detection the box (px) and score difference to detzoo's nearest of its label;
  flagged beyond 1e-2 px / 1e-3.
- **Training** (``--train-models``, torchvision's models): s/iter at batch 2 on the first two
  images of ``--train-ann``, resized by each toolbox's own test-size transform (800, at most
  1333; torchvision's inside the model, detzoo's ``Detector.transform`` inside the timed
  step), forward + backward + SGD step, the same frozen stages (stem + layer1) and frozen BN.
  Each toolbox runs in its own process (spawned) so that its peak RSS (VmHWM) is its own (on
  CUDA the table shows CUDA max allocated instead; both are in the JSON); ``--train-rounds``
  rounds alternate which runs first; the median over rounds of each mean over
  ``--train-iters`` iterations after ``--train-warmup``.
- **Synthetic small-image training** (CPU): benchmarks/train_synthetic.py's R-18-FPN Faster
  R-CNN at 128 px on 64 synthetic images, both toolboxes trained for ``--synthetic-iters``
  iterations, mean s/iter after ``--synthetic-warmup`` (data loading included, as there).

Prints the machine, a markdown table (one row per model) and the synthetic ratio; ``--json``
writes everything. The full run:

    .venv/bin/python benchmarks/compare_toolboxes.py --device cpu --threads 2 \\
        --json benchmarks/results/compare_toolboxes_cpu.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch
from torchvision.transforms.functional import to_tensor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # devtools

import detzoo  # noqa: E402
from detzoo.cli import main as cli  # noqa: E402
from detzoo.data.coco import CocoDataset  # noqa: E402
from detzoo.data.images import read_rgb, rgb_tensor  # noqa: E402
from detzoo.engine.checkpoint import load_checkpoint  # noqa: E402
from detzoo.errors import UserError  # noqa: E402
from detzoo.api import Detector  # noqa: E402
from detzoo.engine.inference import AMP_DTYPES  # noqa: E402
from detzoo.tools.benchmark import conv_peak, environment, forward_gflops, synchronize  # noqa: E402
from devtools.reference_models import IMAGES, TORCHVISION_FAMILIES, import_mmdet, torchvision_model  # noqa: E402
from common import add_malloc_argument, nearest_twins, peak_rss_gb, set_malloc  # noqa: E402
from train_synthetic import synthetic_config, train_detzoo, train_torchvision  # noqa: E402

# model -> (reference toolbox, detzoo config)
MODELS: dict[str, tuple[str, str]] = {
    **{family: ("torchvision", config) for family, (_, _, config, _) in TORCHVISION_FAMILIES.items()},
    "nasfpn": ("mmdet", "retinanet_r50_nasfpn_crop640_50e_coco"),
    "fpg_faster": ("mmdet", "faster_rcnn_r50_fpg_crop640_50e_coco"),
    "fpg_mask": ("mmdet", "mask_rcnn_r50_fpg-chn128_crop640_50e_coco"),
    "fpg_retinanet": ("mmdet", "retinanet_r50_fpg_crop640_50e_coco"),
}
TRAINABLE = ("faster", "mask", "retinanet")  # torchvision's, with box / mask annotations
TOLERANCE = {"box_px": 1e-2, "score": 1e-3}
PEAK_DTYPES = ("fp32", "bf16")


@dataclass
class Side:
    """One toolbox's inference: ``call`` of each of ``inputs`` (timed), and ``numpy`` of its
    result: boxes, scores and labels (detzoo's label numbering) as numpy arrays."""

    name: str
    inputs: list[Any]
    call: Callable[[Any], Any]
    numpy: Callable[[Any], dict[str, np.ndarray]]


def decode(path: str | Path) -> np.ndarray:
    """The HxWx3 uint8 RGB pixels of an image file, as detzoo reads them; writable (torch
    warns on tensors that share read-only memory)."""
    return read_rgb(path).copy()


def torchvision_side(family: str, images: list[np.ndarray], tmp: Path, device: torch.device,
                     test_size: tuple[int, int] | None = None):
    """torchvision's seeded model on ``images`` and detzoo's converted from its state dict
    (saved in ``tmp``), both resizing to ``test_size`` (short side, long side at most) when
    given: (reference Side, detector, the two weight files)."""
    model = torchvision_model(family)
    overrides = []
    if test_size is not None:
        (model.transform.min_size, model.transform.max_size) = ((test_size[0],), test_size[1])
        overrides = [f"data.test_scale={test_size[0]}", f"data.max_size={test_size[1]}"]
    config = MODELS[family][1]
    src, dst = tmp / f"{family}_torchvision.pth", tmp / f"{family}_detzoo.pth"
    torch.save(model.state_dict(), src)
    if cli(["convert", "--from", "torchvision", str(src), "--config", config, "--out", str(dst)]) != 0:
        raise RuntimeError(f"detzoo convert --from torchvision failed for {config}")
    model.to(device)
    side = Side(
        name="torchvision",
        inputs=images,
        call=lambda rgb: model([to_tensor(rgb).to(device)])[0],
        numpy=lambda out: {"boxes": out["boxes"].float().cpu().numpy(), "scores": out["scores"].float().cpu().numpy(),
                           "labels": out["labels"].cpu().numpy() - 1},  # torchvision's background is label 0
    )
    detector = detzoo.load_model(config, dst, device=str(device), overrides=overrides)
    return side, detector, {"torchvision": src, "detzoo": dst}


def mmdet_side(name: str, images: list[np.ndarray], tmp: Path, device: torch.device):
    """mmdetection's model of the row (benchmarks/parity_mmdet.py) on ``images`` and
    detzoo's converted from it: (reference Side, detector, no weight files: not trained here)."""
    import_mmdet()  # mmcv's compiled ops replaced by torchvision.ops first
    from mmcv.transforms import Compose
    from mmdet.apis import inference_detector
    from mmdet.apis.inference import get_test_pipeline_cfg
    from parity_mmdet import converted_pair

    model, detector = converted_pair(MODELS[name][1], tmp)
    pipeline_cfg = get_test_pipeline_cfg(model.cfg.copy())
    pipeline_cfg[0].type = "mmdet.LoadImageFromNDArray"  # as inference_detector does for arrays
    pipeline = Compose(pipeline_cfg)
    model.to(device)
    side = Side(
        name="mmdet",
        inputs=[np.ascontiguousarray(rgb[..., ::-1]) for rgb in images],  # mmcv's BGR
        call=lambda bgr: inference_detector(model, bgr, test_pipeline=pipeline).pred_instances,
        numpy=lambda out: {"boxes": out.bboxes.float().cpu().numpy(), "scores": out.scores.float().cpu().numpy(),
                           "labels": out.labels.cpu().numpy()},
    )
    return side, detector.to(device), {}


def alternate(sides: list[Side], *, warmup: int, runs: int, device: torch.device) -> tuple[dict, dict]:
    """Per side, the seconds of each timed call and the last result of each input."""
    times: dict[str, list[float]] = {s.name: [] for s in sides}
    outputs: dict[str, list] = {s.name: [None] * len(s.inputs) for s in sides}
    with torch.inference_mode():
        for round_ in range(warmup + runs):
            for side in sides if round_ % 2 == 0 else sides[::-1]:
                for i, x in enumerate(side.inputs):
                    synchronize(device)
                    start = time.perf_counter()
                    result = side.call(x)
                    synchronize(device)
                    if round_ >= warmup:
                        times[side.name].append(time.perf_counter() - start)
                    outputs[side.name][i] = side.numpy(result)
    return times, outputs


def agreement(ours: list[dict], theirs: list[dict]) -> dict[str, Any]:
    """detzoo's detections against the reference's, image by image."""
    counts = [[len(o["boxes"]), len(t["boxes"])] for o, t in zip(ours, theirs)]
    # as multisets: detections whose scores differ by rounding may swap places
    labels_equal = all(np.array_equal(np.sort(o["labels"]), np.sort(t["labels"])) for o, t in zip(ours, theirs))
    box, score = (np.concatenate(d) for d in zip(*(nearest_twins(o, t) for o, t in zip(ours, theirs))))
    matched = np.isfinite(box)  # a reference detection whose label detzoo has not found is not
    box, score = float(box[matched].max(initial=0)), float(score[matched].max(initial=0))
    agree = (labels_equal and matched.all() and len(matched) > 0 and box <= TOLERANCE["box_px"]
             and score <= TOLERANCE["score"])
    return {"detections_detzoo_reference": counts, "labels_equal": labels_equal,
            "unmatched": int((~matched).sum()), "max_box_px": box, "max_score": score, "agree": agree}


def with_amp(detector: Detector, amp: str | None) -> Detector:
    """``detector`` (the same network) predicting with ``runtime.amp=amp``."""
    config = {**detector.config, "runtime": {**detector.config["runtime"], "amp": amp}}
    return Detector(model=detector.model, class_names=detector.class_names, cat_ids=detector.cat_ids,
                    transform=detector.transform, config=config)


def under_autocast(side: Side, device: torch.device, dtype: torch.dtype) -> Side:
    """``side`` with each call under ``torch.autocast`` in ``dtype``."""
    def call(x):
        with torch.autocast(device.type, dtype=dtype):
            return side.call(x)
    return Side(name=side.name, inputs=side.inputs, call=call, numpy=side.numpy)


def count_syncs(side: Side, device: torch.device) -> int | None:
    """The host synchronisations of one call of ``side`` on CUDA (each one warns under
    ``torch.cuda.set_sync_debug_mode("warn")``); None elsewhere."""
    if device.type != "cuda":
        return None
    synchronize(device)
    with warnings.catch_warnings(record=True) as caught, torch.inference_mode():
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            side.call(side.inputs[0])
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def measure_inference(name: str, args, tmp: Path, images: list[np.ndarray],
                      device: torch.device) -> tuple[list[dict], dict]:
    """The inference rows of ``name``, one per precision (without % of peak), and the
    weight files for its training."""
    toolbox, config = MODELS[name]
    if toolbox == "torchvision":
        reference, detector, weights = torchvision_side(name, images, tmp, device, args.test_size)
    else:
        reference, detector, weights = mmdet_side(name, images, tmp, device)
    model_inputs = [detector.transform(rgb_tensor(rgb))[0] for rgb in images]
    shapes = [tuple(x.shape[-2:]) for x in model_inputs]
    gflops = [forward_gflops(detector.model, x) for x in model_inputs]
    rows = []
    for precision in args.precisions:
        amp = None if precision == "fp32" else precision
        ours = with_amp(detector, amp)
        sides = [reference if amp is None else under_autocast(reference, device, AMP_DTYPES[amp]),
                 Side(name="detzoo", inputs=images, call=lambda rgb, ours=ours: ours.predict(rgb)[0],
                      numpy=lambda out: {k: out[k] for k in ("boxes", "scores", "labels")})]
        times, outputs = alternate(sides, warmup=args.warmup, runs=args.runs, device=device)
        seconds = {side: float(np.median(t)) for side, t in times.items()}  # per toolbox
        rows.append({
            "model": name,
            "config": config,
            "reference": toolbox,
            "precision": precision,
            "input_sizes": ["x".join(map(str, s)) for s in shapes],
            "s_per_image": {"reference": seconds[toolbox], "detzoo": seconds["detzoo"]},
            "ratio_detzoo_over_reference": seconds["detzoo"] / seconds[toolbox],
            "gflops_per_image": float(np.mean(gflops)),
            "agreement": agreement(outputs["detzoo"], outputs[toolbox]),
            "host_syncs": {"reference": count_syncs(sides[0], device), "detzoo": count_syncs(sides[1], device)},
        })
    return rows, weights


def set_process(threads: int, tf32: bool, malloc: str = "retain") -> bool:
    """Every toolbox's threads, memory allocation and whether CUDA may round fp32
    convolutions and matrix products to TF32. ``malloc="retain"``: freed memory is kept for
    reuse, as detzoo's commands keep it (``detzoo.allocator``), for both toolboxes alike;
    whether it is, returned."""
    torch.set_num_threads(threads)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
    return set_malloc(malloc)


def train_worker(toolbox: str, family: str, weights: str, *, ann_file: str, img_dir: str, batch: int, iters: int,
                 warmup: int, lr: float, threads: int, tf32: bool, malloc: str, device: str) -> dict[str, Any]:
    """In its own process: ``warmup + iters`` training steps of one toolbox's model on the
    first ``batch`` images of the annotation file; s/iter, peak RSS and the last loss."""
    set_process(threads, tf32, malloc)
    target = torch.device(device)
    dataset = CocoDataset(ann_file, img_dir, filter_empty=True, with_masks=family == "mask")
    samples = [dataset[i] for i in range(batch)]  # RGB 0-255 and instances in the image's pixels
    if toolbox == "torchvision":
        model = torchvision_model(family)
        model.load_state_dict(load_checkpoint(weights))
        model.to(target)
        targets = [{"boxes": s.instances.boxes, "labels": s.instances.labels + 1,
                    **({"masks": s.instances.masks} if family == "mask" else {})} for s in samples]
        targets = [{k: v.to(target) for k, v in t.items()} for t in targets]

        def losses() -> dict[str, torch.Tensor]:
            return model([(s.image / 255).to(target) for s in samples], targets)
    else:
        detector = detzoo.load_model(MODELS[family][1], weights, device=device)
        model = detector.model

        def losses() -> dict[str, torch.Tensor]:
            images, instances = zip(*(detector.transform(s.image, s.instances) for s in samples))
            return model(list(images), list(instances))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    torch.manual_seed(0)  # the samplers' draws (torch seeds each process at random): losses comparable run to run
    before = peak_rss_gb()
    times, loss = [], float("nan")
    for _ in range(warmup + iters):
        synchronize(target)
        start = time.perf_counter()
        total = sum(losses().values())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        synchronize(target)
        times.append(time.perf_counter() - start)
        loss = total.item()
    return {
        "s_iter": float(np.mean(times[warmup:])),
        "peak_rss_gb": peak_rss_gb(),
        "rss_before_training_gb": before,
        "cuda_max_allocated_gb": torch.cuda.max_memory_allocated(target) / 2**30 if target.type == "cuda" else None,
        "trainable_params_m": sum(p.numel() for p in params) / 1e6,
        "last_loss": loss,
        "original_sizes": ["x".join(map(str, s.image.shape[-2:])) for s in samples],
    }


def measure_training(family: str, weights: dict[str, Path], args) -> dict[str, Any]:
    """``--train-rounds`` rounds of both toolboxes, each in a fresh spawned process, the order
    alternating; the median over rounds."""
    rounds: dict[str, list[dict]] = {"torchvision": [], "detzoo": []}
    order = ["torchvision", "detzoo"]
    for round_ in range(args.train_rounds):
        for toolbox in order if round_ % 2 == 0 else order[::-1]:
            with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
                result = pool.submit(
                    train_worker, toolbox, family, str(weights[toolbox]), ann_file=args.train_ann,
                    img_dir=args.train_img_dir, batch=2, iters=args.train_iters, warmup=args.train_warmup,
                    lr=args.lr, threads=args.threads, tf32=args.tf32, malloc=args.malloc, device=args.device,
                ).result()
            rounds[toolbox].append(result)
            cuda = result["cuda_max_allocated_gb"]
            print(f"  train {family} {toolbox}: {result['s_iter']:.3f} s/iter, peak RSS {result['peak_rss_gb']:.2f} GiB"
                  + ("" if cuda is None else f", CUDA max allocated {cuda:.2f} GiB")
                  + f", loss {result['last_loss']:.4g}", flush=True)
    keys = ("s_iter", "peak_rss_gb", *(("cuda_max_allocated_gb",) if args.device == "cuda" else ()))
    median = {tb: {k: float(np.median([r[k] for r in rs])) for k in keys} for tb, rs in rounds.items()}
    return {"median": median, "ratio": {k: median["detzoo"][k] / median["torchvision"][k] for k in keys},
            "rounds": rounds}


def measure_synthetic(args, tmp: Path) -> dict[str, Any]:
    """benchmarks/train_synthetic.py's comparison, short: s/iter of each toolbox (CPU)."""
    iters, warmup = args.synthetic_iters, args.synthetic_warmup
    cfg, steps = synthetic_config(tmp / "synthetic", iters, train_images=64, val_images=4,
                                  overrides=("runtime.log_interval=1",))
    _, torchvision_s = train_torchvision(cfg, iters, steps, warmup=warmup)
    _, detzoo_s = train_detzoo(cfg, tmp / "synthetic" / "detzoo", warmup_records=warmup)
    return {"iters": iters, "warmup": warmup, "batch": cfg["data"]["images_per_gpu"],
            "s_iter_torchvision": torchvision_s, "s_iter_detzoo": detzoo_s, "s_iter_ratio": detzoo_s / torchvision_s}


def table(rows: list[dict], memory: str) -> str:
    """The markdown table of the rows; ``memory``: the training memory shown, "peak_rss_gb" or
    "cuda_max_allocated_gb"."""
    what = {"peak_rss_gb": "peak RSS", "cuda_max_allocated_gb": "CUDA max allocated"}[memory]
    head = ("| model | precision | reference | s/img ref | s/img detzoo | ratio | GFLOPs/img | "
            "% fp32 / bf16 peak detzoo | % fp32 / bf16 peak ref | "
            "agreement (dets; max box px / score) | train s/iter ref / detzoo / ratio | "
            f"train {what} GiB ref / detzoo / ratio |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        a = r["agreement"]
        total = sum(b for _, b in a["detections_detzoo_reference"])
        unmatched = f", {a['unmatched']} unmatched" if a["unmatched"] else ""
        agree = (f"{'yes' if a['agree'] else 'NO'} ({total}{unmatched}; {a['max_box_px']:.1g} / "
                 f"{a['max_score']:.1g})")
        t = r.get("train")
        train, mem = (["-"] * 2 if t is None else
                      [f"{t['median']['torchvision'][k]:.2f} / {t['median']['detzoo'][k]:.2f} / {t['ratio'][k]:.2f}"
                       for k in ("s_iter", memory)])
        s, p = r["s_per_image"], r["percent_of_peak"]
        share = {side: " / ".join("-" if p[dtype][side] is None else f"{p[dtype][side]:.0f}" for dtype in PEAK_DTYPES)
                 for side in ("detzoo", "reference")}
        lines.append(f"| {r['config']} | {r['precision']} | {r['reference']} | {s['reference']:.3f} | "
                     f"{s['detzoo']:.3f} | {r['ratio_detzoo_over_reference']:.2f} | {r['gflops_per_image']:.1f} | "
                     f"{share['detzoo']} | {share['reference']} | {agree} | {train} | {mem} |")
    return "\n".join(lines)


def peak_text(peak) -> str:
    """``conv_peak``'s GFLOP/s per dtype, and its notes (an emulated or skipped dtype)."""
    return ", ".join(f"{dtype} " + ("-" if rate is None else f"{rate:.1f} GFLOP/s")
                     + (f" ({peak.notes[dtype]})" if dtype in peak.notes else "")
                     for dtype, rate in peak.gflops_s.items())


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS),
                        help="models to compare (default: all); torchvision's: " + ", ".join(TORCHVISION_FAMILIES)
                        + "; mmdetection's: the others")
    parser.add_argument("--images", nargs="+", type=Path, default=IMAGES,
                        help="images to time inference on (default: the 3 in tests/data/coco/images; more e.g. "
                        "in ../shared/data/coco128/train2017)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch (and OpenCV) threads of every toolbox, training processes included "
                        "(default: torch's, %(default)s here)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu or cuda (default: cuda when available); the synthetic training stays on the CPU")
    add_malloc_argument(parser)
    parser.add_argument("--tf32", action="store_true",
                        help="CUDA: let convolutions and matrix products round to TF32 (torch's default for cuDNN); "
                        "without it both toolboxes compute in full fp32")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed inference rounds, each over all images (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=3,
                        help="timed inference rounds, each over all images (default: %(default)s)")
    parser.add_argument("--test-size", nargs=2, type=int, metavar=("SHORT", "MAX"),
                        help="torchvision's models: both toolboxes resize the short side to SHORT, the long one "
                        "at most MAX (default: the configs' 800 1333)")
    parser.add_argument("--peak-repeats", type=int, default=5,
                        help="timed convolutions per dtype for the conv peaks (default: %(default)s)")
    parser.add_argument("--precisions", nargs="+", choices=PEAK_DTYPES, default=["fp32"],
                        help="inference precisions, each a row per model: fp32, bf16 (autocast) (default: fp32)")
    parser.add_argument("--train-models", nargs="*", choices=TRAINABLE,
                        help="models (among --models) whose training is timed (default: faster and mask where "
                        "compared; the flag alone: no training)")
    parser.add_argument("--train-iters", type=int, default=3,
                        help="timed training iterations per process (default: %(default)s)")
    parser.add_argument("--train-warmup", type=int, default=1,
                        help="untimed training iterations per process (default: %(default)s)")
    parser.add_argument("--train-rounds", type=int, default=2,
                        help="training processes per toolbox, the order alternating (median over them; "
                        "default: %(default)s)")
    parser.add_argument("--train-ann", default=str(ROOT / "tests/data/coco/annotations.json"),
                        help="COCO annotations of the training images, the first two with objects "
                        "(default: tests/data/coco's)")
    parser.add_argument("--train-img-dir", default=str(ROOT / "tests/data/coco/images"),
                        help="folder of --train-ann's images (default: tests/data/coco/images)")
    parser.add_argument("--lr", type=float, default=0.0025,
                        help="SGD learning rate of the training steps (default: %(default)s)")
    parser.add_argument("--synthetic-iters", type=int, default=20,
                        help="iterations of the synthetic small-image training comparison (0: skip it; "
                        "default: %(default)s)")
    parser.add_argument("--synthetic-warmup", type=int, default=5, help="of those, untimed (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args()
    for flag in ("threads", "runs", "peak_repeats", "train_iters", "train_rounds"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    for flag in ("warmup", "train_warmup", "synthetic_iters", "synthetic_warmup"):
        if getattr(args, flag) < 0:
            parser.error(f"--{flag.replace('_', '-')} must be at least 0, got {getattr(args, flag)}")
    if args.synthetic_iters and args.synthetic_warmup >= args.synthetic_iters:
        parser.error(f"--synthetic-warmup ({args.synthetic_warmup}) must be below --synthetic-iters "
                     f"({args.synthetic_iters})")
    if args.device not in ("cpu", "cuda"):
        parser.error(f"--device must be cpu or cuda, got {args.device!r}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if any(MODELS[m][0] == "mmdet" for m in args.models) and importlib.util.find_spec("mmdet") is None:
        parser.error("the mmdetection models need mmdetection 3.3 (pip install -e '.[test]'); or pick --models "
                     + " ".join(TORCHVISION_FAMILIES))
    if args.test_size is not None:
        if min(args.test_size) < 32 or args.test_size[0] > args.test_size[1]:
            parser.error(f"--test-size SHORT MAX: two sizes of at least 32, SHORT <= MAX, got {args.test_size}")
        if mmdet := [m for m in args.models if MODELS[m][0] == "mmdet"]:
            parser.error(f"--test-size is for torchvision's models; not for {' '.join(mmdet)}")
    if args.train_models is None:
        args.train_models = [m for m in ("faster", "mask") if m in args.models]
    if not_compared := [m for m in args.train_models if m not in args.models]:
        parser.error(f"--train-models {' '.join(not_compared)}: not among --models")
    for path in [*args.images, Path(args.train_ann), Path(args.train_img_dir)]:
        if not path.exists():
            parser.error(f"not found: {path}")
    return args


def main() -> None:
    args = parse_args()
    retained = set_process(args.threads, args.tf32, args.malloc)
    cv2.setNumThreads(args.threads)  # mmdetection resizes with OpenCV
    device = torch.device(args.device)
    machine = {**environment(device), "cpus": os.cpu_count(), "loadavg_start": os.getloadavg(),
               "freed_memory_retained": retained}
    if device.type == "cuda":
        machine["tf32"] = args.tf32
    try:
        images = [decode(p) for p in args.images]
        if args.train_models and len(CocoDataset(args.train_ann, args.train_img_dir, filter_empty=True)) < 2:
            raise UserError(f"{args.train_ann}: training needs two images with objects")
    except UserError as e:  # one line naming the file, as argparse reports a bad flag
        print(f"compare_toolboxes.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"{machine['processor']}, {args.threads} threads, device {machine['device']}; torch {machine['torch']}, "
          f"torchvision {machine['torchvision']}; load average {machine['loadavg_start']}", flush=True)
    peak_start = conv_peak(device, PEAK_DTYPES, calls=args.peak_repeats)
    print(f"conv peaks: {peak_text(peak_start)}", flush=True)

    rows = []
    with tempfile.TemporaryDirectory(prefix="compare-toolboxes-") as tmp:
        tmp = Path(tmp)
        for name in args.models:
            print(f"{name}: {MODELS[name][1]} against {MODELS[name][0]}", flush=True)
            model_rows, weights = measure_inference(name, args, tmp, images, device)
            for row in model_rows:
                print(f"  inference {row['precision']}: {row['s_per_image']['reference']:.3f} s/img reference, "
                      f"{row['s_per_image']['detzoo']:.3f} detzoo, agreement {row['agreement']}", flush=True)
                if not row["agreement"]["agree"]:
                    print(f"  FLAG: {name} {row['precision']}: detzoo's detections differ from the reference's "
                          f"beyond {TOLERANCE['box_px']} px / {TOLERANCE['score']} (or there are none)", flush=True)
            if name in args.train_models:
                model_rows[0]["train"] = measure_training(name, weights, args)
            rows.extend(model_rows)
        synthetic = measure_synthetic(args, tmp) if args.synthetic_iters else None
    peak_end = conv_peak(device, PEAK_DTYPES, calls=args.peak_repeats)
    machine["loadavg_end"] = os.getloadavg()
    if "mmdet" in {MODELS[m][0] for m in args.models}:
        machine["mmdet"] = __import__("mmdet").__version__
    peak = {dtype: max((p.gflops_s[dtype] for p in (peak_start, peak_end) if p.gflops_s[dtype]), default=None)
            for dtype in PEAK_DTYPES}
    for row in rows:
        row["percent_of_peak"] = {
            dtype: {side: None if peak[dtype] is None else 100 * row["gflops_per_image"] / seconds / peak[dtype]
                    for side, seconds in row["s_per_image"].items()}
            for dtype in PEAK_DTYPES}

    print(f"\nconv peaks at the start: {peak_text(peak_start)}; at the end: {peak_text(peak_end)} (% of peak: of the "
          f"higher); load average {machine['loadavg_start']} -> {machine['loadavg_end']}")
    print(table(rows, "cuda_max_allocated_gb" if device.type == "cuda" else "peak_rss_gb"))
    if synthetic is not None:
        print(f"\nsynthetic small-image training (R-18-FPN Faster R-CNN, 128 px, batch {synthetic['batch']}, CPU, "
              f"{synthetic['iters'] - synthetic['warmup']} timed iterations): torchvision "
              f"{synthetic['s_iter_torchvision']:.3f} s/iter, detzoo {synthetic['s_iter_detzoo']:.3f}, ratio "
              f"{synthetic['s_iter_ratio']:.2f}")
    if args.json:
        record = {
            "command": shlex.join([".venv/bin/python", "benchmarks/compare_toolboxes.py", *sys.argv[1:]]),
            "machine": machine,
            "images": [str(p) for p in args.images],
            "settings": {k: v for k, v in vars(args).items() if k not in ("images", "json")},
            "conv_peak": {"start": peak_start.record(), "end": peak_end.record()},
            "models": rows,
            "synthetic": synthetic,
        }
        args.json.write_text(json.dumps(record, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
