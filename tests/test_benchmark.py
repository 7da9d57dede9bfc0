"""detzoo benchmark: the JSON the metafiles record, FLOPs and parameters against torch's own
counter and the model's own count, the timing arithmetic (model and loaders), --skip-*,
Fast R-CNN's proposals, and one-line errors."""

import json
import shlex
import time

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from detzoo.api import load_model
from detzoo.cli import main
from detzoo.config import load_config
from detzoo.data.proposals import save_proposals
from detzoo.data.synthetic import data_overrides
from detzoo.detectors.build import build_model
from detzoo.engine.checkpoint import save_checkpoint
import detzoo.tools.benchmark as benchmark_module
from detzoo.tools.benchmark import (
    PEAK_CALLS,
    PEAK_SHAPE,
    ConvPeakSampler,
    conv_peak,
    count_complexity,
    flops_input,
    forward_gflops,
    image_inputs,
    split_stages,
    time_inference,
    time_loader,
)
from detzoo.zoo.metafile import read_run
from tests.conftest import TESTS

TINY = str(TESTS / "configs" / "tiny_faster_rcnn.py")
IMAGES = sorted(str(p) for p in (TESTS / "data" / "coco" / "images").glob("*.jpg"))
FAST = ["--warmup", "1", "--train-warmup", "1", "--train-iters", "1", "--device", "cpu", "--peak-shape", "1", "16",
        "8", "8", "--stage-runs", "1"]
SCHEMA = {
    "config": None,
    "checkpoint": None,
    "command": None,
    "date": None,
    "environment": {"device", "device_type", "processor", "threads", "torch", "torchvision", "detzoo", "python"},
    "inference": {"images", "warmup", "input", "fps", "model_s", "postprocess_s"},
    "train": {"iters", "warmup", "batch_size", "s_iter", "peak_memory_gb", "memory_kind", "data_s", "stages"},
    "complexity": {"gflops", "params_m", "input_shape"},
    **dict.fromkeys(("train_loader", "test_loader"), {"input", "batches", "warmup", "images", "num_workers",
                                                      "images_per_s", "model_images_per_s", "ratio"}),
    "amp": None,
    "peak": {"shape", "calls", "gflops_s", "notes"},
    "stages": {"input_shape", "runs", "warmup", "model_s", "postprocess_s", "seconds", "gflops", "fastest_s",
               "fastest"},
    "peak_share": {"fp32", "bf16"},
}
PARTS = ("inference", "train", "complexity", "train_loader", "test_loader", "peak", "stages")


def _noise(model, shape):
    """A model input of ``shape`` for ``model``: count_complexity's noise image."""
    return flops_input(model.pixel_format, shape), shape, {}


def _sets(data_root):
    return [item for override in data_overrides(data_root) for item in ("--set", override)]


def _run(args, tmp_path):
    out = tmp_path / "bench.json"
    assert main([*args, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_every_part_with_flops_and_params_as_torch_counts_them(synth_data, tmp_path, capsys):
    torch.manual_seed(0)
    checkpoint = tmp_path / "weights.pth"
    save_checkpoint(checkpoint, {"model": build_model(load_config(TINY)["model"]).state_dict()})
    args = ["benchmark", TINY, str(checkpoint), *_sets(synth_data), "--images", *IMAGES, "--num-images", "4",
            *FAST, "--train-iters", "2", "--shape", "64", "96"]
    record = _run(args, tmp_path)

    assert set(record) == set(SCHEMA)
    for part, keys in SCHEMA.items():
        if keys is not None:
            assert set(record[part]) == keys, part
    assert record["config"] == "tiny_faster_rcnn" and record["checkpoint"] == str(checkpoint)
    assert record["command"] == shlex.join(["detzoo", *args, "--json", str(tmp_path / "bench.json")])
    env = record["environment"]
    assert env["device_type"] == "cpu" and env["threads"] == torch.get_num_threads()
    assert env["torch"] == str(torch.__version__)

    inference = record["inference"]
    assert inference["images"] == 4 and inference["warmup"] == 1
    assert inference["input"] == "images: " + ", ".join(IMAGES) + ", cycled"
    assert inference["model_s"] > 0 and inference["postprocess_s"] > 0
    assert inference["fps"] == pytest.approx(1 / (inference["model_s"] + inference["postprocess_s"]))

    train = record["train"]
    assert train["iters"] == 2 and train["warmup"] == 1 and train["batch_size"] == 4  # tiny: images_per_gpu 4
    assert train["s_iter"] > 0 and train["memory_kind"] == "peak_rss" and train["peak_memory_gb"] > 0
    assert 0 < train["data_s"] < train["s_iter"]
    assert train["stages"] is None  # the split of an iteration comes with --profile

    # each loader against the model's own rate on its path: the training step without the wait for data; fps
    train_loader, test_loader = record["train_loader"], record["test_loader"]
    assert train_loader["model_images_per_s"] == pytest.approx(4 / (train["s_iter"] - train["data_s"]))
    assert test_loader["model_images_per_s"] == inference["fps"]
    assert (train_loader["batches"], train_loader["warmup"], train_loader["images"]) == (2, 1, 8)  # as training
    assert (test_loader["batches"], test_loader["warmup"], test_loader["images"]) == (4, 1, 4)  # as inference
    assert train_loader["num_workers"] == test_loader["num_workers"] == 0  # tiny: data.num_workers 0
    for loader in (train_loader, test_loader):
        assert loader["images_per_s"] > 0 and loader["model_images_per_s"] > 0
        assert loader["ratio"] == pytest.approx(loader["images_per_s"] / loader["model_images_per_s"])

    detector = load_model(TINY, checkpoint)
    model = detector.model
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model([flops_input(model.pixel_format, (64, 96))])
    assert counter.get_total_flops() > 0
    assert record["complexity"]["gflops"] == pytest.approx(counter.get_total_flops() / 1e9, rel=1e-12)
    assert record["complexity"]["params_m"] == pytest.approx(sum(p.numel() for p in model.parameters()) / 1e6)
    assert record["complexity"]["input_shape"] == [3, 64, 96]

    # the stage split on the first timed image: its FLOPs are that image's, its share of each peak GFLOPs / (X + Y)
    stages, peak = record["stages"], record["peak"]
    first = next(image_inputs(IMAGES, detector.transform))[0]
    assert stages["input_shape"] == [3, *first.shape[-2:]] != [3, 64, 96] and stages["runs"] == 1
    assert sum(stages["gflops"].values()) == pytest.approx(forward_gflops(model, first))
    assert peak["shape"] == [1, 16, 8, 8] and record["amp"] is None
    assert peak["calls"] == stages["warmup"] + stages["runs"] + PEAK_CALLS  # one before each split run, then 5
    rate = sum(stages["gflops"].values()) / (stages["model_s"] + stages["postprocess_s"])
    assert record["peak_share"] == pytest.approx({k: rate / v for k, v in peak["gflops_s"].items()})
    # one run: it is the fastest, of the whole and of each stage
    assert stages["fastest_s"] == pytest.approx(stages["model_s"] + stages["postprocess_s"])
    four = ("backbone", "neck", "dense_head", "roi_heads")
    assert stages["fastest"] == {name: stages["seconds"][name] for name in four}
    assert read_run(tmp_path / "bench.json") == record  # what `detzoo zoo record` files

    text = capsys.readouterr().out
    for label in ("fps", "X + Y", "s/iter", "data wait", "peak RSS", "GFLOPs", "params", "threads", "loader / model",
                  "conv peak", "fp32 peak", "roi_heads", "its fastest run at", "fastest ms",
                  "one before each of the stage split's 2 runs and 5 after them"):
        assert label in text, label


def test_fps_is_one_over_the_mean_per_image_time_after_warmup(monkeypatch):
    # per image the clock is read before the model, after it and after post-processing
    x, y = [9.0, 1.0, 3.0], [7.0, 0.5, 1.5]
    ticks = iter(t for start, xi, yi in zip([0.0, 100.0, 200.0], x, y) for t in (start, start + xi, start + xi + yi))
    detector = load_model(TINY)
    inputs = image_inputs(IMAGES, detector.transform)
    monkeypatch.setattr(time, "perf_counter", lambda: next(ticks))
    speed = time_inference(detector.model, (next(inputs) for _ in range(3)), warmup=1, input="three images")
    assert speed.images == 2 and speed.warmup == 1
    assert speed.model_s == pytest.approx(2.0) and speed.postprocess_s == pytest.approx(1.0)
    assert speed.fps == pytest.approx(1 / np.mean([1.0 + 0.5, 3.0 + 1.5]))
    assert speed.fastest_s == pytest.approx(1.0 + 0.5)  # the fastest timed image's X + Y, the warm-up's 16 s not


def test_loader_rate_counts_the_images_after_the_warmup_batches(monkeypatch):
    # the clock is read before the first batch, after each warm-up batch and after the last batch
    ticks = iter([0.0, 10.0, 15.0])
    monkeypatch.setattr(time, "perf_counter", lambda: next(ticks))
    speed = time_loader([[0, 1, 2], [3, 4], [5, 6, 7]], warmup=1, num_workers=0, input="three batches",
                        model_images_per_s=0.25)
    assert (speed.batches, speed.images) == (2, 5)
    assert speed.images_per_s == pytest.approx(5 / 5.0) and speed.ratio == pytest.approx(1.0 / 0.25)


@pytest.mark.parametrize(
    "skips, kept",
    [
        (["--skip-train", "--skip-flops", "--skip-peak"], ["inference", "test_loader"]),
        (["--skip-inference", "--skip-train", "--skip-peak"], ["complexity"]),
        (["--skip-inference", "--skip-flops", "--skip-peak", "--set", "data.num_workers=1"], ["train", "train_loader"]),
        (["--skip-inference", "--skip-flops", "--skip-loader"], ["train", "peak"]),
    ],
)
def test_skips_leave_their_parts_null(skips, kept, synth_data, tmp_path):
    record = _run(["benchmark", TINY, *_sets(synth_data), *FAST, *skips], tmp_path)
    assert [part for part in PARTS if record[part] is not None] == kept
    if "train_loader" in kept:  # with a worker process, as the trainer had
        assert record["train_loader"]["num_workers"] == 1 and record["train_loader"]["ratio"] > 0
    if "inference" in kept:  # data.val: the 8 synthetic validation images after 1 warm-up
        assert record["inference"]["images"] == 8
        assert record["inference"]["input"].startswith(f"data.val: {synth_data / 'val' / 'images'} (8 images")
    if "complexity" in kept:  # the config's test size
        assert record["complexity"]["input_shape"] == [3, 64, 64]


def test_fast_rcnn_times_inference_on_the_proposals_of_data_val(synth_data, tmp_path, capsys):
    image_ids = [image["id"] for image in json.loads((synth_data / "val" / "annotations.json").read_text())["images"]]
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 32, (len(image_ids), 10, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(8, 32, corners.shape)], axis=2).astype(np.float32)
    save_proposals(tmp_path / "val.npz", {i: (b, np.ones(10, np.float32)) for i, b in zip(image_ids, boxes)})
    config = str(TESTS / "configs" / "tiny_fast_rcnn.py")
    sets = [*_sets(synth_data), "--set", f"data.val.proposals_file={tmp_path / 'val.npz'}"]
    record = _run(["benchmark", config, *sets, *FAST, "--skip-train", "--skip-flops"], tmp_path)
    assert record["inference"]["images"] == 8 and record["inference"]["model_s"] > 0

    capsys.readouterr()
    assert main(["benchmark", config, *sets, *FAST, "--skip-train"]) == 2  # FLOPs need proposals: refused at once
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "precomputed proposals" in err[0] and "--skip-flops" in err[0]


@pytest.mark.parametrize(
    "args, names",
    [
        ([TINY, "--images", "no/such.jpg"], "no/such.jpg"),
        ([TINY, "no/such.pth", "--skip-train"], "no/such.pth"),
        (["no_such_config_name"], "no_such_config_name"),
        ([TINY, "--set", "data.val.img_dirr=x"], "img_dirr"),
        ([TINY, "--num-images", "0"], "num_images"),
        ([TINY, "--peak-shape", "1", "0", "8", "8"], "peak_shape[1]"),
        ([TINY, "--amp", "fp16"], "runtime.amp='fp16' needs CUDA"),
        ([TINY, "--profile", "--skip-train"], "--profile"),
    ],
)
def test_bad_input_is_one_error_line(args, names, capsys):
    assert main(["benchmark", *args, "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("detzoo benchmark: error:") and names in err[0], err


def test_conv_peak_is_the_best_call_after_the_warmup(monkeypatch):
    # per call the clock is read before and after the convolution: the warm-up call 5 s, then 3, 2 and 4 s
    ticks = iter(t for start, seconds in zip([0.0, 10.0, 20.0, 30.0], [5.0, 3.0, 2.0, 4.0]) for t in
                 (start, start + seconds))
    monkeypatch.setattr(time, "perf_counter", lambda: next(ticks))
    peak = conv_peak(torch.device("cpu"), ("fp32",), shape=(2, 16, 8, 4), calls=3)
    assert peak.gflops_s == {"fp32": pytest.approx(2 * 2 * 16 * 16 * 9 * 8 * 4 / 2.0 / 1e9)}
    assert PEAK_SHAPE == (1, 256, 100, 168)  # the map, 2 * 256 * 256 * 9 * 100 * 168 FLOPs per call


def test_peak_samples_run_in_their_own_dtype_under_autocast(monkeypatch):
    """The split's runs are under runtime.amp's autocast: the peak's fp32 call stays fp32."""
    dtypes, conv2d = [], torch.nn.functional.conv2d
    monkeypatch.setattr(torch.nn.functional, "conv2d", lambda *a, **k: dtypes.append(conv2d(*a, **k).dtype))
    sampler = ConvPeakSampler(torch.device("cpu"), ("fp32", "bf16"), shape=(1, 8, 4, 4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        sampler.sample()
        sampler.sample()
    assert dtypes == [torch.float32, torch.bfloat16] * 3 and sampler.calls == 2  # the warm-ups, then two samples
    peak = sampler.peak()
    assert peak.calls == 2 and all(rate > 0 for rate in peak.gflops_s.values())


def test_stage_split_calls_between_before_each_run_outside_its_timing():
    calls = []
    model = load_model(TINY).model
    split = split_stages(model, _noise(model, (64, 96)), warmup=1, runs=1,
                         between=lambda: (calls.append(1), time.sleep(1.0)))  # fmt: skip
    assert len(calls) == 2 and split.model_s < 1.0 and split.fastest_s < 1.0


def test_conv_peak_measures_fp32_and_bf16():
    peak = conv_peak(torch.device("cpu"), shape=(1, 32, 16, 16), calls=2)
    assert set(peak.gflops_s) == {"fp32", "bf16"} and peak.calls == 2
    assert peak.gflops_s["fp32"] > 0
    # bf16 runs on every CPU torch supports (emulated without AVX512-BF16 / AMX, which a note says)
    assert peak.gflops_s["bf16"] is not None and peak.gflops_s["bf16"] > 0
    assert not torch.ops.mkldnn._is_mkldnn_bf16_supported() or "bf16" not in peak.notes


@pytest.mark.parametrize("config, stages", [
    (TINY, ["backbone", "neck", "dense_head", "roi_heads"]),
    (str(TESTS / "configs" / "tiny_mask_rcnn_c4.py"), ["backbone", "dense_head", "roi_heads"]),  # C4: no neck
])
def test_stage_split_names_the_model_stages_and_sums_to_x(config, stages):
    model = load_model(config).model
    split = split_stages(model, _noise(model, (64, 96)), warmup=1, runs=2)
    assert list(split.seconds) == [*stages, "other", "postprocess"] and split.runs == 2
    assert all(split.seconds[name] > 0 for name in stages)
    # the stages are X but for moving the image to the device and padding it: most of it
    staged = sum(split.seconds[name] for name in stages)
    assert 0.5 * split.model_s < staged <= split.model_s
    assert sum(split.seconds.values()) == pytest.approx(split.model_s + split.postprocess_s)
    assert split.seconds["postprocess"] == split.postprocess_s
    assert list(split.gflops) == [*stages, "postprocess"] and all(split.gflops[name] > 0 for name in stages)
    assert list(split.fastest) == stages and all(0 < split.fastest[name] <= split.seconds[name] for name in stages)
    assert split.fastest_s <= split.model_s + split.postprocess_s
    assert split.total_gflops == pytest.approx(count_complexity(model, (64, 96)).gflops)


def test_forward_flops_count_the_keypoint_head_once_per_detection_of_the_image():
    """compare_toolboxes.py times real images: their FLOPs must be those images' own, not those
    of noise of their size, on which a model may find nothing for its keypoint head to run on."""
    config = str(TESTS / "configs" / "tiny_keypoint_rcnn.py")
    image = next(image_inputs(IMAGES[:1], load_model(config).transform))[0]
    gflops = {}
    for kept in (2, 4, 6):
        torch.manual_seed(0)
        model = load_model(config, overrides=[f"model.roi_heads.detections_per_image={kept}"]).model.eval()
        with torch.inference_mode():
            assert len(model([image])[0].boxes) == kept
        gflops[kept] = forward_gflops(model, image)
    per_detection = (gflops[4] - gflops[2]) / 2
    assert per_detection > 0 and gflops[6] - gflops[4] == pytest.approx(2 * per_detection)


def test_stage_split_flops_outside_the_stages_are_not_a_rounding_error(monkeypatch):
    """The per-module FLOP counts of a Faster R-CNN R-50-FPN forward at 320x533, all inside its
    four stages: divided into GFLOPs before the difference, the rest came out -1.4e-14."""
    counts = {"Global": 93898334720, "DetectionModel.backbone": 28359720960, "DetectionModel.neck": 19719782400,
              "DetectionModel.dense_head": 17210319360, "DetectionModel.roi_heads": 28608512000}

    class Counter:
        def get_flop_counts(self):
            return {module: {torch.ops.aten.convolution: n} for module, n in counts.items()}

    monkeypatch.setattr(benchmark_module, "_count_flops", lambda model, image: Counter())
    model = load_model(TINY).model
    split = split_stages(model, _noise(model, (64, 96)), warmup=0, runs=1)
    assert split.gflops == {"backbone": 28.35972096, "neck": 19.7197824, "dense_head": 17.21031936,
                            "roi_heads": 28.608512, "postprocess": 0.0}


def test_profile_splits_the_timed_training_iterations_into_stages(synth_data, tmp_path, capsys):
    record = _run(["benchmark", TINY, *_sets(synth_data), *FAST, "--train-iters", "2", "--profile", "--skip-inference",
                   "--skip-flops", "--skip-loader", "--skip-peak"], tmp_path)
    train = record["train"]
    stages = train["stages"]
    assert list(stages) == ["data", "backbone", "neck", "dense_head", "roi_heads", "backward", "optimizer"]
    assert all(seconds >= 0 for seconds in stages.values()) and stages["backbone"] > 0 and stages["backward"] > 0
    assert stages["data"] == pytest.approx(train["data_s"])  # the trainer's own wait for data
    # each part lies within the iteration's clock: together no more than s/iter
    assert sum(stages.values()) <= train["s_iter"] * (1 + 1e-9)
    assert read_run(tmp_path / "bench.json") == record
    text = capsys.readouterr().out
    for label in ("--profile", *stages, "other"):
        assert label in text, label


def test_amp_reaches_the_model(synth_data, tmp_path, capsys):
    record = _run(["benchmark", TINY, *_sets(synth_data), *FAST, "--skip-train", "--skip-loader", "--amp", "bf16"],
                  tmp_path)
    assert record["amp"] == "bf16" and set(record["peak_share"]) == {"fp32", "bf16"}

    torch.manual_seed(0)
    checkpoint = tmp_path / "weights.pth"
    save_checkpoint(checkpoint, {"model": build_model(load_config(TINY)["model"]).state_dict()})
    predictions = {}
    for amp in ([], ["--amp", "bf16"]):
        out = tmp_path / ("infer" + "".join(amp))
        assert main(["infer", TINY, str(checkpoint), IMAGES[0], "--out", str(out), *amp]) == 0
        (predictions[tuple(amp)],) = json.loads((out / "predictions.json").read_text()).values()
    fp32, bf16 = predictions[()], predictions[("--amp", "bf16")]
    assert fp32 != bf16  # bf16 rounding reaches the scores
    assert np.max(fp32["scores"]) == pytest.approx(np.max(bf16["scores"]), abs=0.05)

    # detzoo test: fp16 reaches the inference's autocast, which refuses it on the CPU in one line
    assert main(["test", TINY, str(checkpoint), *_sets(synth_data), "--amp", "fp16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("detzoo test: error:") and "runtime.amp='fp16' needs CUDA" in err[-1], err
