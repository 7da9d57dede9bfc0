"""``detzoo benchmark``: the measured columns of a model-zoo row, taken by detzoo itself.

- **Inference speed**, batch 1, warm-up images excluded, clocks read after
  ``torch.cuda.synchronize`` on a GPU: fps and Detectron's "X + Y" split, X the model
  (``DetectionModel.preprocess`` onto the device + ``detect``: network and decoding) and Y
  the post-processing (``DetectionModel.postprocess``: back to original pixels, masks
  pasted, keypoints decoded from their heatmaps). Reading and resizing the image are not timed.
- **Training speed**: the trainer's own wall time per iteration (its ``IterationTimer``'s
  ``time``, as its ``log.jsonl`` has it, data loading included), collected by a hook in
  ``train()`` run for a short schedule with the config's data, optimizer and batch,
  averaged over the iterations after a warm-up.
  **Peak memory**: CUDA max allocated over the timed iterations on a GPU (the zoo tables'
  Mem column); on a CPU the process's peak RSS, which includes the Python / torch baseline,
  so the text also gives the increase over the peak before training. Training runs first,
  so that this peak is the training's and not the inference model's.
- **Training stage split** (``--profile``): the timed training iterations split into
  waiting for the batch (the trainer's ``data_time``), each stage's forward (forward pre-
  and post-hooks on the model's ``backbone``, ``neck``, ``dense_head`` and ``roi_heads``,
  as the inference's stage split, their losses included), the backward (from the end of
  the forward to the end of the backward: zeroing the gradients, loss scaling, backward,
  gradient clipping) and the optimizer step (the optimizer's own step hooks), each the
  mean seconds per timed iteration, clocks read after ``torch.cuda.synchronize`` on a GPU
  (whose waits the s/iter of a profiled run then includes); the rest of s/iter ("other":
  moving the images to the device, padding, the scheduler, the hooks) is in the text.
- **Loader speed**, with each of training and inference: its data path alone, no model, in
  images/s, against the model's own images/s on that path; loader / model > 1 means the
  model never waits for data. Training: the trainer's loader (``data.train``, its train
  transforms, ``images_per_gpu``, ``num_workers``, seed) over as many warm-up and timed
  batches as the training timing, against ``images_per_gpu / (s/iter - data wait)``: the
  trainer's step alone, because a starved trainer's s/iter is the loader's own time, which
  would put the ratio at 1. Test: reading + the test transform of the inference inputs, one
  at a time in this process (as ``predict`` runs them), against the fps.
- **Conv peak**: the machine's own limit, for scale: the best of several calls (after a
  warm-up call) of a 3x3, 256 -> 256 channel convolution on a 1x256x100x168 channels-last
  map (the kernel that dominates these models), in fp32 and in bf16 (and fp16 with
  ``--amp fp16``) through the tensors' dtype, under inference mode: one call before each
  run of the stage split, then ``PEAK_CALLS`` in a row (``ConvPeakSampler``). The model's
  share of a peak is its FLOPs over the stage split's X + Y over the peak, X + Y the mean
  over the runs or that of the fastest run.
- **Stage split**: the first timed image run through the inference timing again
  (``warmup`` + ``stage_runs`` times, under ``runtime.amp``) with forward pre- and post-hooks
  on the model's ``backbone``, ``neck``, ``dense_head`` (its NMS included) and ``roi_heads``
  (clocks read after ``torch.cuda.synchronize`` on a GPU): each stage's time and its FLOPs
  (``FlopCounterMode``'s per-module counts on one forward), "other" the rest of X (onto
  the device, padding), postprocess Y with the counted FLOPs outside the four modules. On
  that image and not on noise: the mask and keypoint heads run on the detections, so the
  work of the RoI heads depends on what the model finds in the image.
- **FLOPs and parameters**: ``torch.utils.flop_counter.FlopCounterMode`` over one eval
  forward at a fixed input shape, one multiply-add counted as 2 FLOPs (mmdetection's
  ``get_flops`` counts multiply-adds, half this number); parameters: every parameter of
  the model, frozen ones included.

``Benchmark.record()`` is the JSON that the zoo metafiles record.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import itertools
import math
import platform
import resource
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator, Mapping, Sequence, Sized

import numpy as np
import torch
import torchvision
from torch import Tensor
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from detzoo.api import load_model
from detzoo.config import apply_overrides, load_config
from detzoo.data.build import build_dataset, model_targets
from detzoo.data.coco import CocoDataset
from detzoo.data.images import read_image
from detzoo.data.loader import build_train_loader
from detzoo.data.transforms import Compose
from detzoo.detectors.build import build_model
from detzoo.detectors.model import DetectionModel
from detzoo.engine import distributed
from detzoo.engine.evaluate import model_inputs
from detzoo.engine.hooks import Hook
from detzoo.engine.inference import AMP_DTYPES, autocast_dtype, emulated_bf16, inference_context
from detzoo.engine.trainer import train
from detzoo.errors import InputError, MissingFileError
from detzoo.structures import PixelFormat, Size
from detzoo.version import __version__
from detzoo.zoo.metafile import run_record

GIB = 2**30
# ru_maxrss is in KiB on Linux, in bytes on macOS
_RSS_UNIT = 1 if sys.platform == "darwin" else 1024

# one timed model input: the resized, normalised image, its original size, and the
# forward's other keyword arguments (Fast R-CNN's proposals)
ModelInput = tuple[Tensor, Size, dict[str, Any]]
# the conv peak's map, N x C x H x W: a 3x3 C -> C convolution, the kernel that dominates these models
PEAK_SHAPE = (1, 256, 100, 168)
PEAK_CALLS = 5  # the peak's timed calls in a row (after those between the stage split's runs)
# the model's stages, attributes of DetectionModel (None where a model has no such stage)
STAGES = ("backbone", "neck", "dense_head", "roi_heads")
RANDOM_INIT = (
    "random init (no checkpoint): speed does not depend on the weights, but the number of detections "
    "does, and Y grows with it"
)


class _Part:
    """A part of the benchmark; ``record()`` is its JSON, without the fields in ``TEXT_ONLY``."""

    TEXT_ONLY: ClassVar[tuple[str, ...]] = ()

    def record(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in self.TEXT_ONLY}


@dataclass(frozen=True)
class InferenceSpeed(_Part):
    """Means per timed image. ``fps`` is 1 / mean(X + Y), X = ``model_s``, Y = ``postprocess_s``;
    ``fastest_s`` the X + Y of the fastest timed image."""

    images: int
    warmup: int
    input: str
    fps: float
    model_s: float
    postprocess_s: float
    detections: float  # mean per timed image; Y grows with it
    fastest_s: float

    TEXT_ONLY: ClassVar[tuple[str, ...]] = ("detections", "fastest_s")


@dataclass(frozen=True)
class TrainSpeed(_Part):
    """s/iter over the ``iters`` iterations after ``warmup``; memory in GiB (2^30 bytes);
    ``stages`` (with ``--profile``): the mean seconds per iteration of "data", each of ``STAGES``
    the model has, "backward" and "optimizer" (``TrainStageClock``)."""

    iters: int
    warmup: int
    batch_size: int
    s_iter: float
    peak_memory_gb: float
    memory_kind: str  # "cuda_max_allocated" or "peak_rss"
    before_gb: float  # the same measure before training started
    data_s: float  # the part of s_iter the trainer waited for its loader
    stages: dict[str, float] | None = None

    TEXT_ONLY: ClassVar[tuple[str, ...]] = ("before_gb",)

    @property
    def images_per_s(self) -> float:
        """The training step's own rate (forward, backward, update), the wait for data left out."""
        return self.batch_size / (self.s_iter - self.data_s)


@dataclass(frozen=True)
class LoaderSpeed(_Part):
    """A data path alone: ``images_per_s`` over ``images`` images in ``batches`` batches after
    ``warmup`` warm-up batches, against ``model_images_per_s``, the model's own rate on that
    path: ``ratio`` = loader / model (> 1: the model never waits for data)."""

    input: str
    batches: int
    warmup: int
    images: int
    num_workers: int
    images_per_s: float
    model_images_per_s: float
    ratio: float


@dataclass(frozen=True)
class Complexity(_Part):
    """GFLOPs (1 multiply-add = 2 FLOPs) of one forward on an image of ``input_shape``,
    which the model pads to ``padded_shape``; parameters in millions."""

    gflops: float
    params_m: float
    input_shape: tuple[int, int, int]
    padded_shape: tuple[int, int]

    TEXT_ONLY: ClassVar[tuple[str, ...]] = ("padded_shape",)


@dataclass(frozen=True)
class ConvPeak(_Part):
    """The machine's conv peak per dtype name ("fp32", "bf16", "fp16"): the best GFLOP/s of
    ``calls`` calls, after one warm-up call, of a 3x3 C -> C convolution (padding 1) on a
    channels-last map of ``shape`` (N, C, H, W); None where the device does not run that
    dtype, with the reason in ``notes`` (which also says where a CPU emulates bf16)."""

    shape: tuple[int, int, int, int]
    calls: int
    gflops_s: dict[str, float | None]
    notes: dict[str, str]


@dataclass(frozen=True)
class StageSplit(_Part):
    """Mean seconds per image of each stage the model has (``STAGES``), of "other" (the rest
    of X) and of "postprocess" (Y), over ``runs`` forwards after ``warmup`` of an image of
    ``input_shape``; ``gflops`` of each stage and of "postprocess" (the counted FLOPs outside
    the stages) on one forward of that image; ``model_s`` + ``postprocess_s`` = X + Y.
    ``fastest_s``: the X + Y of the fastest run, ``fastest`` the fastest call of each stage:
    set against a peak that is the best of its calls, the share of the model's best (on a
    host whose speed drifts, the mean runs include its slow spells; the best call does not)."""

    input_shape: tuple[int, int, int]
    runs: int
    warmup: int
    model_s: float
    postprocess_s: float
    seconds: dict[str, float]
    gflops: dict[str, float]
    fastest_s: float
    fastest: dict[str, float]

    @property
    def total_gflops(self) -> float:
        return sum(self.gflops.values())


@dataclass(frozen=True)
class Benchmark:
    """What ``detzoo benchmark`` measured, with where and how."""

    config: str
    checkpoint: str | None
    command: str
    date: str
    environment: dict[str, Any]
    inference: InferenceSpeed | None
    train: TrainSpeed | None
    complexity: Complexity | None
    train_loader: LoaderSpeed | None
    test_loader: LoaderSpeed | None
    amp: str | None = None  # runtime.amp of the inference and the stage split
    peak: ConvPeak | None = None
    stages: StageSplit | None = None

    @property
    def peak_dtype(self) -> str:
        """The dtype whose peak the model's figures are set against: runtime.amp's, else fp32."""
        return self.amp or "fp32"

    def peak_share(self, *, fastest: bool = False) -> dict[str, float] | None:
        """The model's share of each measured peak: the stage split's GFLOPs / (X + Y) / peak,
        X + Y the mean over its runs, or with ``fastest`` that of its fastest run."""
        if self.peak is None or self.stages is None:
            return None
        split = self.stages
        rate = split.total_gflops / (split.fastest_s if fastest else split.model_s + split.postprocess_s)
        return {name: rate / peak for name, peak in self.peak.gflops_s.items() if peak is not None}

    def record(self) -> dict[str, Any]:
        """The JSON the zoo metafiles record (``detzoo benchmark --json``): the zoo's
        ``run_record`` of these fields (each part's ``record()``) and ``peak_share``."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return run_record({**{k: v.record() if isinstance(v, _Part) else v for k, v in values.items()},
                           "peak_share": self.peak_share()})

    def text(self) -> str:
        """The readable report."""
        env = self.environment
        lines = [
            f"config       {self.config}",
            f"weights      {self.checkpoint or RANDOM_INIT}",
            f"device       {env['device']} ({env['processor']}), {env['threads']} threads",
            f"versions     torch {env['torch']}, torchvision {env['torchvision']}, detzoo {env['detzoo']}, "
            f"python {env['python']}",
        ]
        if self.inference is not None:
            inf = self.inference
            lines += [
                f"inference    {inf.images} images after {inf.warmup} warm-up, batch 1; {inf.input}",
                f"  fps        {inf.fps:.3f}",
                f"  X + Y      {1e3 * inf.model_s:.1f} + {1e3 * inf.postprocess_s:.1f} ms/image "
                "(X: to the device + network + decoding; Y: to original pixels, mask pasting; "
                "image reading and resizing not timed)",
                f"  detections {inf.detections:.1f} per image",
            ]
        if self.train is not None:
            tr = self.train
            memory = {"cuda_max_allocated": "CUDA max allocated", "peak_rss": "peak RSS of the process"}[tr.memory_kind]
            lines += [
                f"train        {tr.iters} iterations after {tr.warmup} warm-up, {tr.batch_size} images per "
                "iteration (data.images_per_gpu)",
                f"  s/iter     {tr.s_iter:.3f} (the trainer's time per iteration, data loading included)",
                f"  data wait  {tr.data_s:.3f} s/iter (data_s: the part of s/iter spent waiting for the loader)",
                f"  memory     {tr.peak_memory_gb:.2f} GB {memory} (peak_memory_gb; GB = 2^30 bytes), "
                f"{tr.peak_memory_gb - tr.before_gb:.2f} GB over the {tr.before_gb:.2f} GB before training",
            ]
            if tr.stages is not None:
                lines += _train_stage_lines(tr)
        if self.complexity is not None:
            c = self.complexity
            shape = "x".join(map(str, c.input_shape))
            lines += [
                f"complexity   one forward on a {shape} image (padded to {c.padded_shape[0]}x{c.padded_shape[1]} "
                "by the model)",
                f"  GFLOPs     {c.gflops:.4g} (torch.utils.flop_counter: 1 multiply-add = 2 FLOPs; mmdetection's "
                f"get_flops counts multiply-adds: {c.gflops / 2:.4g}); RoI heads: on the proposals kept for this input",
                f"  params     {c.params_m:.2f} M (all, frozen included)",
            ]
        if self.peak is not None:
            p = self.peak
            spread = ""
            if self.stages is not None:  # benchmark() samples the peak between the split's runs
                between = self.stages.warmup + self.stages.runs
                spread = f", one before each of the stage split's {between} runs and {p.calls - between} after them"
            lines.append(f"conv peak    best of {p.calls} calls of a 3x3 {p.shape[1]} -> {p.shape[1]} conv on a "
                         f"{'x'.join(map(str, p.shape))} channels-last map, inference mode{spread}")
            share, best = self.peak_share() or {}, self.peak_share(fastest=True) or {}
            for name, rate in p.gflops_s.items():
                figure = "not measured" if rate is None else f"{rate:.1f} GFLOP/s"
                if name in share:
                    figure += (f"; the model (GFLOPs / (X + Y) of the stage split) at {100 * share[name]:.1f}%, "
                               f"its fastest run at {100 * best[name]:.1f}%")
                note = f" ({p.notes[name]})" if name in p.notes else ""
                lines.append(f"  {name:<10} {figure}{note}")
        if self.stages is not None:
            lines += _stage_lines(self.stages, self.peak_dtype,
                                  None if self.peak is None else self.peak.gflops_s.get(self.peak_dtype))
        if self.train_loader is not None or self.test_loader is not None:
            lines.append("loader       each data path alone, no model, against the model's own images/s "
                         "(loader / model > 1: the model never waits for data)")
        if self.train_loader is not None:
            lines += _loader_lines("train", self.train_loader, "the training step, batch / (s/iter - data wait)")
        if self.test_loader is not None:
            lines += _loader_lines("test", self.test_loader, "inference fps")
        return "\n".join(lines)


def _stage_lines(split: StageSplit, dtype: str, peak: float | None) -> list[str]:
    """The stage split's table: stage, mean ms, share of X + Y, GFLOPs, % of the ``dtype`` peak;
    then the fastest call's ms and % of the peak (the four stages)."""
    shape = "x".join(map(str, split.input_shape))
    total = split.model_s + split.postprocess_s

    def share(gflops: float | None, seconds: float | None) -> str:
        if gflops is None or seconds is None or peak is None or seconds <= 0:
            return "-"
        return f"{100 * gflops / seconds / peak:.1f}%"

    lines = [
        f"stages       the first image ({shape} after the test transform), {split.runs} runs after "
        f"{split.warmup} warm-up; X + Y = "
        f"{1e3 * split.model_s:.1f} + {1e3 * split.postprocess_s:.1f} ms mean, {1e3 * split.fastest_s:.1f} ms "
        "the fastest run",
        f"  {'stage':<12}{'ms':>9}{'time':>8}{'GFLOPs':>10}{f'{dtype} peak':>11}{'fastest ms':>12}{'peak':>8}",
    ]
    for name, seconds in split.seconds.items():
        gflops, fastest = split.gflops.get(name), split.fastest.get(name)
        lines.append(f"{_stage_row(name, seconds, total)}{'-' if gflops is None else f'{gflops:.4g}':>10}"
                     f"{share(gflops, seconds):>11}{'-' if fastest is None else f'{1e3 * fastest:.2f}':>12}"
                     f"{share(gflops, fastest):>8}")
    return lines


def _train_stage_lines(speed: TrainSpeed) -> list[str]:
    """The training stage split's table (``--profile``): stage, ms, share of s/iter, "other" the rest."""
    seconds = {**speed.stages, "other": speed.s_iter - sum(speed.stages.values())}
    return [
        "  stages     mean per timed iteration (--profile; on a GPU s/iter includes the clocks' synchronizations)",
        f"  {'stage':<12}{'ms':>9}{'time':>8}",
        *(_stage_row(name, value, speed.s_iter) for name, value in seconds.items()),
    ]


def _stage_row(name: str, seconds: float, total: float) -> str:
    """A stage table's first columns: its name, its ms, its share of ``total`` seconds."""
    return f"  {name:<12}{1e3 * seconds:>9.2f}{100 * seconds / total:>7.1f}%"


def _loader_lines(path: str, speed: LoaderSpeed, model: str) -> list[str]:
    """A loader's two lines of the report: its own rate, then the model's and the ratio."""
    return [
        f"  {path:<10} {speed.images_per_s:.3f} images/s over {speed.images} images in {speed.batches} batches "
        f"after {speed.warmup} warm-up, {speed.num_workers} workers; {speed.input}",
        f"  vs model   {speed.model_images_per_s:.3f} images/s ({model}): loader / model {speed.ratio:.2f}",
    ]


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a clock read after it counts that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _processor() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict[str, Any]:
    """Where a benchmark ran: device, CPU, threads and versions."""
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "device_type": device.type,
        "processor": _processor(),
        "threads": torch.get_num_threads(),
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "detzoo": __version__,
        "python": platform.python_version(),
    }


def dataset_inputs(dataset: CocoDataset) -> Iterator[ModelInput]:
    """The test samples of ``dataset`` in order, endlessly (from its start again after the last)."""
    for index in itertools.cycle(range(len(dataset))):
        sample = dataset[index]
        yield sample.image, sample.original_size, model_inputs([sample])


def image_inputs(paths: Sequence[str | Path], transform: Compose) -> Iterator[ModelInput]:
    """The images at ``paths`` through the test ``transform``, endlessly."""
    for path in itertools.cycle(paths):
        image = read_image(Path(path))
        yield transform(image)[0], tuple(image.shape[-2:]), {}


def time_inference(
    model: DetectionModel, inputs: Iterable[ModelInput], *, warmup: int, input: str, amp: str | None = None
) -> InferenceSpeed:
    """Time each input alone through the model's own steps: X = ``preprocess`` + ``detect``,
    Y = ``postprocess``, as ``predict`` runs them (``inference_context``: inference mode,
    autocast with ``amp``); the first ``warmup`` inputs are run but not counted. ``input``
    describes the inputs for the report."""
    model.eval()
    device = model.device
    model_s, postprocess_s, detections = [], [], []
    with inference_context(device, amp):
        for i, (image, original_size, extra) in enumerate(inputs):
            synchronize(device)
            start = time.perf_counter()
            batch = model.preprocess([image], [original_size])
            results, _ = model.detect(batch, **extra)
            synchronize(device)
            detected = time.perf_counter()
            (result,) = model.postprocess(results, batch)
            synchronize(device)
            end = time.perf_counter()
            if i >= warmup:
                model_s.append(detected - start)
                postprocess_s.append(end - detected)
                detections.append(len(result))
    if not model_s:
        raise InputError(f"no image left to time after {warmup} warm-up images")
    return InferenceSpeed(
        images=len(model_s),
        warmup=warmup,
        input=input,
        fps=float(1 / np.mean(np.add(model_s, postprocess_s))),
        model_s=float(np.mean(model_s)),
        postprocess_s=float(np.mean(postprocess_s)),
        detections=float(np.mean(detections)),
        fastest_s=float(np.min(np.add(model_s, postprocess_s))),
    )


@contextlib.contextmanager
def stage_clock(model: DetectionModel) -> Iterator[dict[str, list[float]]]:
    """The seconds of each call of each stage the model has, in call order, from forward
    pre- and post-hooks (the clock read after ``synchronize``), while the context is open."""
    device = model.device
    seconds: dict[str, list[float]] = {name: [] for name in STAGES if getattr(model, name) is not None}
    starts: dict[str, float] = {}

    def before(name: str, *_: Any) -> None:
        synchronize(device)
        starts[name] = time.perf_counter()

    def after(name: str, *_: Any) -> None:
        synchronize(device)
        seconds[name].append(time.perf_counter() - starts[name])

    handles = [hook for name in seconds for hook in (
        getattr(model, name).register_forward_pre_hook(functools.partial(before, name)),
        getattr(model, name).register_forward_hook(functools.partial(after, name)),
    )]
    try:
        yield seconds
    finally:
        for handle in handles:
            handle.remove()


def split_stages(
    model: DetectionModel, model_input: ModelInput, *, warmup: int, runs: int, amp: str | None = None,
    between: Callable[[], None] | None = None,
) -> StageSplit:  # fmt: skip
    """Where the time and the FLOPs of an inference go, stage by stage, on ``model_input`` (one of
    ``time_inference``'s inputs; its extra arguments, Fast R-CNN's proposals, are not counted): timed
    ``warmup + runs`` times under ``stage_clock``, and ``FlopCounterMode``'s per-module counts of
    one forward (as ``forward_gflops``). ``between`` is called before each run, outside its
    timing (``ConvPeakSampler.sample``)."""
    image = model_input[0]

    def inputs() -> Iterator[ModelInput]:
        for _ in range(warmup + runs):
            if between is not None:
                between()
            yield model_input

    with stage_clock(model) as clock:
        speed = time_inference(model, inputs(), warmup=warmup, input="stage split", amp=amp)
    seconds = {name: float(np.mean(calls[warmup:])) for name, calls in clock.items()}
    fastest = {name: float(np.min(calls[warmup:])) for name, calls in clock.items()}
    # integer FLOPs until the difference below is taken: in floats, equal totals left -1e-14 GFLOPs
    counts = {name: sum(ops.values()) for name, ops in _count_flops(model, image).get_flop_counts().items()}
    root = type(model).__name__
    flops = {name: counts.get(f"{root}.{name}", 0) for name in seconds}
    flops["postprocess"] = counts.get("Global", 0) - sum(flops.values())
    return StageSplit(
        input_shape=(3, *image.shape[-2:]),
        runs=runs,
        warmup=warmup,
        model_s=speed.model_s,
        postprocess_s=speed.postprocess_s,
        seconds={**seconds, "other": speed.model_s - sum(seconds.values()), "postprocess": speed.postprocess_s},
        gflops={name: n / 1e9 for name, n in flops.items()},
        fastest_s=speed.fastest_s,
        fastest=fastest,
    )


class ConvPeakSampler:
    """The conv peak's convolution, a 3x3 C -> C (padding 1) on a channels-last map of
    ``shape`` (N, C, H, W), in each of ``dtypes`` ("fp32", or a ``runtime.amp`` name), input
    and weight in that dtype, under inference mode and no autocast: built with one warm-up
    call each (not counted), then ``sample()`` times one call of each, and ``peak()`` is the
    best of all samples. The samples may be spread over a run: ``benchmark`` takes one before
    each run of the stage split, so that on a host whose speed drifts the peak comes from the
    same span of time as the model's figures."""

    def __init__(
        self, device: torch.device, dtypes: Sequence[str] = ("fp32", "bf16"), *,
        shape: tuple[int, int, int, int] = PEAK_SHAPE,
    ) -> None:  # fmt: skip
        n, c, h, w = shape
        self.device, self.shape, self.dtypes, self.calls = device, tuple(shape), tuple(dtypes), 0
        self.flops = 2 * n * c * c * 9 * h * w
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(shape, generator=generator)
        weight = torch.randn(c, c, 3, 3, generator=generator) / (3 * c**0.5)
        self.notes: dict[str, str] = {}
        self._args: dict[str, list[Tensor]] = {}
        self._best: dict[str, float] = {}
        for name in self.dtypes:
            dtype = AMP_DTYPES.get(name, torch.float32)
            if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
                self.notes[name] = f"skipped: {torch.cuda.get_device_name(device)} has no bfloat16"
                continue
            if dtype == torch.bfloat16 and emulated_bf16(device):
                self.notes[name] = "this CPU has no native bf16 (no AVX512-BF16 / AMX): emulated"
            args = [t.to(device, dtype).contiguous(memory_format=torch.channels_last) for t in (x, weight)]
            try:
                self._seconds(args)  # the warm-up
            except RuntimeError as e:
                self.notes[name] = f"skipped: {device.type} does not run a {name} convolution ({e})"
                continue
            self._args[name], self._best[name] = args, math.inf

    def _seconds(self, args: list[Tensor]) -> float:
        with torch.inference_mode(), torch.autocast(self.device.type, enabled=False):
            return call_seconds(lambda: F.conv2d(*args, padding=1), self.device)

    def sample(self, calls: int = 1) -> None:
        """``calls`` timed calls in a row in each dtype."""
        for _ in range(calls):
            for name, args in self._args.items():
                self._best[name] = min(self._best[name], self._seconds(args))
            self.calls += 1

    def peak(self) -> ConvPeak:
        """GFLOP/s of the best sample of each dtype; None for a skipped one (or before any sample)."""
        rates = {name: self.flops / self._best[name] / 1e9 if self._best.get(name, math.inf) < math.inf else None
                 for name in self.dtypes}  # fmt: skip
        return ConvPeak(shape=self.shape, calls=self.calls, gflops_s=rates, notes=dict(self.notes))


def conv_peak(
    device: torch.device, dtypes: Sequence[str] = ("fp32", "bf16"), *, shape: tuple[int, int, int, int] = PEAK_SHAPE,
    calls: int = PEAK_CALLS,
) -> ConvPeak:
    """The device's conv peak in each of ``dtypes``: the best of ``calls`` calls in a row
    (``ConvPeakSampler``)."""
    sampler = ConvPeakSampler(device, dtypes, shape=shape)
    sampler.sample(calls)
    return sampler.peak()


def best_seconds(fn: Callable[[], object], device: torch.device, calls: int) -> float:
    """The fastest of ``calls`` timed calls of ``fn`` after one warm-up call (timed too, not
    counted), each between synchronisations of ``device``."""
    best = float("inf")
    for call in range(calls + 1):
        seconds = call_seconds(fn, device)
        if call:  # the first call is the warm-up
            best = min(best, seconds)
    return best


def call_seconds(fn: Callable[[], object], device: torch.device) -> float:
    """The seconds of one call of ``fn``, between synchronisations of ``device``."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def _memory_gb(device: torch.device) -> float:
    """CUDA memory allocated now, or the process's peak RSS so far, in GiB."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / GIB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _RSS_UNIT / GIB


class IterationTimes(Hook):
    """Each training iteration's ``time`` and ``data_time`` (the trainer's ``IterationTimer``'s)
    and, on a GPU, its CUDA peak in GiB (``memory_gb``), one dict each in ``iterations``."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.iterations: list[dict[str, float]] = []

    def before_step(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def after_step(self) -> None:
        scalars = self.trainer.scalars
        times = {"time": scalars["time"], "data_time": scalars["data_time"]}
        if self.device.type == "cuda":
            times["memory_gb"] = torch.cuda.max_memory_allocated(self.device) / GIB
        self.iterations.append(times)


class TrainStageClock(Hook):
    """Each training iteration's seconds in each of its parts, one dict each in
    ``iterations``: "data", the wait for the batch (the trainer's ``data_time``); each of
    ``STAGES`` the model has, its forward (``stage_clock``); "backward", from the
    ``after_forward`` to the ``after_backward`` hook; "optimizer", its step (the optimizer's
    step pre- and post-hooks; 0 where the GradScaler skipped it). Clocks read after
    ``synchronize``."""

    def __init__(self) -> None:
        self.iterations: list[dict[str, float]] = []

    def before_train(self) -> None:
        trainer = self.trainer
        self._hooks = contextlib.ExitStack()
        self._stages = self._hooks.enter_context(stage_clock(trainer.model))
        for handle in (trainer.optimizer.register_step_pre_hook(functools.partial(self._mark, "step")),
                       trainer.optimizer.register_step_post_hook(functools.partial(self._mark, "stepped"))):
            self._hooks.callback(handle.remove)

    def before_step(self) -> None:
        self._marks: dict[str, float] = {}
        self._calls = {name: len(seconds) for name, seconds in self._stages.items()}

    def after_forward(self) -> None:
        self._mark("forward")

    def after_backward(self) -> None:
        self._mark("backward")

    def after_step(self) -> None:
        marks = self._marks
        self.iterations.append({
            "data": self.trainer.data_time,
            **{name: sum(seconds[self._calls[name]:]) for name, seconds in self._stages.items()},
            "backward": marks["backward"] - marks["forward"],
            "optimizer": marks["stepped"] - marks["step"] if "stepped" in marks else 0.0,
        })

    def after_train(self) -> None:
        self._hooks.close()

    def _mark(self, name: str, *_: Any) -> None:
        synchronize(self.trainer.model.device)
        self._marks[name] = time.perf_counter()


def time_training(
    cfg: Mapping[str, Any], *, iters: int, warmup: int, device: torch.device, profile: bool = False
) -> TrainSpeed:
    """Train ``cfg`` (from scratch, as ``detzoo train``) for ``warmup + iters`` iterations in a
    temporary work dir, evaluating nothing, and take the trainer's per-iteration times from
    an ``IterationTimes`` hook; with ``profile``, the stage split of a ``TrainStageClock``
    too. On a GPU the memory is the largest of the per-iteration CUDA peaks over the timed
    iterations; on a CPU the process's peak RSS over the whole run (data set-up, warm-up
    and the final checkpoint write included; data-loader worker processes not)."""
    total = warmup + iters
    short = {
        **cfg,
        "data": {k: v for k, v in cfg["data"].items() if k != "val"},
        "schedule": {"iters": total, "steps": ()},
        "runtime": {**cfg["runtime"], "device": device.type, "checkpoint_interval": total, "eval_interval": 0},
    }
    times, clock = IterationTimes(device), TrainStageClock() if profile else None
    before = _memory_gb(device)
    with tempfile.TemporaryDirectory(prefix="detzoo-benchmark-") as work_dir:
        train(short, work_dir=work_dir, hooks=[times, *([clock] if clock else [])])
    window = times.iterations[warmup:]
    if device.type == "cuda":
        peak, kind = max(t["memory_gb"] for t in window), "cuda_max_allocated"
    else:
        peak, kind = _memory_gb(device), "peak_rss"
    return TrainSpeed(
        iters=len(window),
        warmup=warmup,
        batch_size=cfg["data"]["images_per_gpu"],
        s_iter=float(np.mean([t["time"] for t in window])),
        peak_memory_gb=peak,
        memory_kind=kind,
        before_gb=before,
        data_s=float(np.mean([t["data_time"] for t in window])),
        stages=None if clock is None else {name: float(np.mean([t[name] for t in clock.iterations[warmup:]]))
                                           for name in clock.iterations[0]},
    )


def time_loader(
    batches: Iterable[Sized], *, warmup: int, num_workers: int, input: str, model_images_per_s: float
) -> LoaderSpeed:
    """Fetch ``batches`` and do nothing with them: the images of the batches after the first
    ``warmup``, over the time from the last warm-up batch to the last batch (with workers,
    the warm-up takes their start; batches they prefetched during it make a few timed
    batches read high). ``input`` describes the path for the report; ``model_images_per_s``:
    the model's own rate on it."""
    images, timed = 0, 0
    start = time.perf_counter()
    for i, batch in enumerate(batches):
        if i < warmup:
            start = time.perf_counter()
        else:
            images, timed = images + len(batch), timed + 1
    seconds = time.perf_counter() - start
    if not timed:
        raise InputError(f"no batch left to time after {warmup} warm-up batches")
    rate = images / seconds
    return LoaderSpeed(
        input=input,
        batches=timed,
        warmup=warmup,
        images=images,
        num_workers=num_workers,
        images_per_s=rate,
        model_images_per_s=model_images_per_s,
        ratio=rate / model_images_per_s,
    )


def time_train_loader(cfg: Mapping[str, Any], *, iters: int, warmup: int, model_images_per_s: float) -> LoaderSpeed:
    """``time_loader`` over ``warmup + iters`` batches of the trainer's own loader: the
    ``data.train`` dataset with the train transforms and the model's targets, batched,
    seeded and sharded as ``train`` does, epoch after epoch."""
    model, data, seed = _meta_model(cfg), cfg["data"], cfg["runtime"]["seed"]
    dataset = build_dataset(data, "train", model.pixel_format, train=True, seed=seed, **model_targets(model.outputs))
    epochs = (
        build_train_loader(dataset, batch_size=data["images_per_gpu"], num_workers=data["num_workers"], seed=seed,
                           epoch=epoch, rank=distributed.rank(), world_size=distributed.world_size())
        for epoch in itertools.count()
    )
    return time_loader(
        itertools.islice(itertools.chain.from_iterable(epochs), warmup + iters),
        warmup=warmup,
        num_workers=data["num_workers"],
        input=f"data.train: {data['train']['img_dir']} ({len(dataset)} images), {data['images_per_gpu']} per "
        "batch (data.images_per_gpu): read, decode, train transforms",
        model_images_per_s=model_images_per_s,
    )


def flops_input(pixel_format: PixelFormat, shape: Size) -> Tensor:
    """The image FLOPs are counted on: uniform noise in 0-255 (seed 0) of ``shape`` (h, w),
    normalised for the model."""
    generator = torch.Generator().manual_seed(0)
    return pixel_format.normalize(torch.rand(3, *shape, generator=generator) * 255)


@torch.no_grad()
def count_complexity(model: DetectionModel, shape: Size) -> Complexity:
    """FLOPs of one eval forward on ``flops_input`` of ``shape`` (convolutions and matrix
    products, as ``FlopCounterMode`` counts them; the RoI heads' share depends on how many
    proposals the dense head keeps, so on the weights), and the model's parameter count."""
    image = flops_input(model.pixel_format, shape)
    return Complexity(
        gflops=forward_gflops(model, image),
        params_m=sum(p.numel() for p in model.parameters()) / 1e6,
        input_shape=(3, *shape),
        padded_shape=tuple(model.preprocess([image], None).tensor.shape[-2:]),
    )


def forward_gflops(model: DetectionModel, image: Tensor) -> float:
    """GFLOPs of one eval forward of ``image``, a model input (as the test transform gives
    it), as ``FlopCounterMode`` counts them. The RoI heads' count depends on the image: the
    box head runs on the proposals the dense head keeps, the mask and keypoint heads on the
    detections (Keypoint R-CNN R-50-FPN at 800x1333: about 7 GFLOPs per detection)."""
    return _count_flops(model, image).get_total_flops() / 1e9


@torch.no_grad()
def _count_flops(model: DetectionModel, image: Tensor) -> FlopCounterMode:
    """The counter after one eval forward of ``image``: total and per-module FLOPs."""
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model([image])
    return counter


def _meta_model(cfg: Mapping[str, Any]) -> DetectionModel:
    """The config's model on the meta device (no memory, no weights), to ask what it takes and gives."""
    with torch.device("meta"):
        return build_model(cfg["model"])


def benchmark(
    config: str | Path,
    checkpoint: str | Path | None = None,
    *,
    overrides: Sequence[str] = (),
    device: str = "auto",
    images: Sequence[str | Path] = (),
    num_images: int | None = None,
    warmup: int = 5,
    train_iters: int = 20,
    train_warmup: int = 5,
    shape: Size | None = None,
    inference: bool = True,
    train: bool = True,
    flops: bool = True,
    loader: bool = True,
    peak: bool = True,
    peak_shape: Sequence[int] | None = None,
    stage_runs: int = 5,
    profile: bool = False,
    command: str = "",
) -> Benchmark:
    """Measure ``config`` (a name or path, with ``overrides``) on ``device`` ("auto": CUDA
    when available): training on ``data.train`` (``train_warmup`` + ``train_iters``
    iterations, from scratch), then inference with ``checkpoint`` (a file or a zoo model name,
    as ``load_model`` takes it, read after the training; random init without one) on
    ``images`` or else ``data.val`` (``warmup`` + ``num_images`` images, default each
    input once), then FLOPs at ``shape`` (h, w; default the config's ``test_scale`` x
    ``max_size``). With ``loader``, the training loader alone after the training (as many
    batches) and the inference inputs' reading and transform alone after the inference.
    With inference and FLOPs, the stage split on the first inference image (``warmup`` +
    ``stage_runs`` runs); with ``peak``, the conv peaks (fp32, bf16, and fp16 when
    ``runtime.amp`` is fp16) on a map of ``peak_shape`` (default ``PEAK_SHAPE``). With ``profile``,
    the training's stage split (``TrainStageClock``). ``command`` is recorded as the
    command that produced the figures."""
    peak_shape = tuple(peak_shape or PEAK_SHAPE)
    counts = {"warmup": (warmup, 0), "train_warmup": (train_warmup, 0), "train_iters": (train_iters, 1),
              "num_images": (1 if num_images is None else num_images, 1), "stage_runs": (stage_runs, 1),
              **{f"peak_shape[{i}]": (side, 1) for i, side in enumerate(peak_shape)},
              **{f"shape[{i}]": (side, 1) for i, side in enumerate(shape or ())}}
    for name, (value, least) in counts.items():
        if value < least:
            raise InputError(f"benchmark: {name} must be at least {least}, got {value}")
    if profile and not train:
        raise InputError("benchmark: --profile splits the training iterations; it cannot go with --skip-train")
    for path in images:
        if not Path(path).is_file():
            raise MissingFileError(f"image not found: {path}")
    cfg = apply_overrides(load_config(config), overrides)
    if ((inference and images) or flops) and _meta_model(cfg).needs_proposals:
        raise InputError(
            f"{config} takes precomputed proposals (Fast R-CNN): time its inference on data.val "
            "(data.val.proposals_file), not --images; its FLOPs are not counted (--skip-flops)"
        )
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("device cuda: no CUDA device is available")
    target = distributed.init_from_env(device)
    amp = cfg["runtime"].get("amp")
    autocast_dtype(amp, target)  # a wrong runtime.amp is an error before anything runs
    speed = None
    if train:
        speed = time_training(cfg, iters=train_iters, warmup=train_warmup, device=target, profile=profile)
    train_loader = test_loader = None
    if speed is not None and loader:
        train_loader = time_train_loader(cfg, iters=train_iters, warmup=train_warmup,
                                         model_images_per_s=speed.images_per_s)

    inference_speed = complexity = stages = None
    peak_dtypes = ("fp32", "bf16", *(["fp16"] if amp == "fp16" else []))
    sampler = ConvPeakSampler(target, peak_dtypes, shape=peak_shape) if peak else None
    if inference or flops:
        detector = load_model(config, checkpoint, device=str(target), overrides=overrides)
        model, data = detector.model, detector.config["data"]
        if inference:
            if images:
                available, source = len(images), "images: " + ", ".join(map(str, images))
                inputs = functools.partial(image_inputs, images, detector.transform)
            else:
                dataset = build_dataset(data, "val", model.pixel_format, train=False)
                available, source = len(dataset), f"data.val: {data['val']['img_dir']} ({len(dataset)} images)"
                inputs = functools.partial(dataset_inputs, dataset)
            count = available if num_images is None else num_images
            source += ", cycled" if warmup + count > available else ""
            inference_speed = time_inference(
                model, itertools.islice(inputs(), warmup + count), warmup=warmup, input=source,
                amp=amp,
            )
            if loader:
                test_loader = time_loader(
                    ([x] for x in itertools.islice(inputs(), warmup + count)), warmup=warmup, num_workers=0,
                    input=f"{source}: read + test transform, one at a time in this process (as predict does)",
                    model_images_per_s=inference_speed.fps,
                )
        if flops:
            flops_shape = tuple(shape or (data["test_scale"], data["max_size"]))
            complexity = count_complexity(model, flops_shape)
            if inference:
                stages = split_stages(model, next(inputs()), warmup=warmup, runs=stage_runs, amp=amp,
                                      between=None if sampler is None else sampler.sample)  # fmt: skip
    peaks = None
    if sampler is not None:
        sampler.sample(PEAK_CALLS)
        peaks = sampler.peak()
    return Benchmark(
        config=Path(str(config)).stem,
        checkpoint=None if checkpoint is None else str(checkpoint),
        command=command,
        date=datetime.date.today().isoformat(),
        environment=environment(target),
        inference=inference_speed,
        train=speed,
        complexity=complexity,
        train_loader=train_loader,
        test_loader=test_loader,
        amp=amp,
        peak=peaks,
        stages=stages,
    )
