"""COCO evaluation speed: pycocotools' COCOeval against detzoo's (``run_cocoeval``, i.e.
``detzoo.evaluation.fast_coco``), on the same results file, with the same numbers.

    .venv/bin/python benchmarks/coco_eval_speed.py --repeats 9 --json benchmarks/results/coco_eval_speed.json

The results are made from coco128's ground truth (``--ann`` for boxes, ``--segm-ann`` for
masks; not shipped with detzoo): per object ``--copies`` jittered copies (moved by normal
noise of sigma 0.1 of the box's size, scaled by a factor of normal noise around 1 of sigma
0.1), one in five labelled with a random category, plus ``--false-positives`` random boxes
per image, scores rounded to two decimals (ties); masks are the object's polygons moved and
scaled like the copy's box, false positives rectangles, as compressed RLEs (the results keep
no boxes, so that areas are mask areas in both, as ``prepare_results`` does).

Timed, alternating which goes first (even rounds pycocotools): pycocotools' ``loadRes`` and,
separately, ``COCOeval(...)`` + ``evaluate()`` + ``accumulate()`` + ``summarize()``;
detzoo's ``run_cocoeval(...)`` + ``stats``, which includes reading the results (its
``loadRes``) and the ground-truth check. Each run gets a fresh ground truth (COCOeval's
segm evaluation rewrites its polygons as RLEs), built untimed. The speed-up is the ratio of
the medians, against COCOeval's evaluate + accumulate + summarize alone and with loadRes.
The arrays of the last round are compared: stats, precision, recall and scores. The process
keeps the memory it frees for reuse, as detzoo's commands do (``detzoo.allocator``; ``detzoo
test`` evaluates under it), for both toolboxes alike; ``--malloc default`` leaves glibc's
defaults, under which every numpy array above its mmap threshold is fresh memory that the
kernel zeroes page by page.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import importlib.metadata
import io
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
from pycocotools.cocoeval import COCOeval

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # detzoo and devtools of this checkout

from common import add_malloc_argument, set_malloc  # noqa: E402
from detzoo.evaluation.coco import run_cocoeval  # noqa: E402
from devtools.coco_reference import make_coco as fresh_coco  # noqa: E402

COCO128 = ROOT.parent / "shared/data/coco128/annotations"  # the checkout sits beside shared/


def load_dataset(path: Path) -> dict:
    if not path.is_file():
        raise SystemExit(f"coco_eval_speed: annotation file not found: {path} (coco128's; see --ann / --segm-ann)")
    return json.loads(path.read_text())


def make_results(dataset: dict, *, masks: bool, copies: int, false_positives: int, seed: int) -> list[dict]:
    """Jittered copies of every object and random false positives (see the module docstring)."""
    rng = np.random.default_rng(seed)
    images = {image["id"]: image for image in dataset["images"]}
    cat_ids = [c["id"] for c in dataset["categories"]]
    results = []
    for ann in dataset["annotations"]:
        image = images[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        for _ in range(copies):
            dx, dy = rng.normal(0, 0.1, 2) * [w, h]
            sx, sy = np.clip(rng.normal(1, 0.1, 2), 0.5, 1.5)
            label = ann["category_id"] if rng.random() < 0.8 else int(rng.choice(cat_ids))
            det = {"image_id": ann["image_id"], "category_id": label, "score": round(float(rng.random()), 2)}
            if masks:  # each polygon scaled about the box's top-left corner, then moved
                polygons = [[(x + dx + (v - x) * sx) if i % 2 == 0 else (y + dy + (v - y) * sy)
                             for i, v in enumerate(p)] for p in ann["segmentation"]]  # fmt: skip
                rles = mask_utils.frPyObjects(polygons, image["height"], image["width"])
                det["segmentation"] = _rle(mask_utils.merge(rles))
            else:
                det["bbox"] = [x + dx, y + dy, w * sx, h * sy]
            results.append(det)
    for image in dataset["images"]:
        for _ in range(false_positives):
            w, h = rng.uniform(8, 0.5 * image["width"]), rng.uniform(8, 0.5 * image["height"])
            x, y = rng.uniform(0, image["width"] - w), rng.uniform(0, image["height"] - h)
            label, score = int(rng.choice(cat_ids)), round(float(rng.random()), 2)
            det = {"image_id": image["id"], "category_id": label, "score": score}
            if masks:
                mask = np.zeros((image["height"], image["width"]), dtype=np.uint8, order="F")
                mask[int(y) : int(y + h), int(x) : int(x + w)] = 1
                det["segmentation"] = _rle(mask_utils.encode(mask))
            else:
                det["bbox"] = [float(x), float(y), float(w), float(h)]
            results.append(det)
    return results


def _rle(encoded: dict) -> dict:
    return {**encoded, "counts": encoded["counts"].decode("ascii")}


def time_pycocotools(dataset: dict, results: list[dict], iou_type: str) -> tuple[float, float, COCOeval]:
    """(loadRes seconds, COCOeval + evaluate + accumulate + summarize seconds, the COCOeval)."""
    gt, results = fresh_coco(dataset), copy.deepcopy(results)
    gc.collect()
    with contextlib.redirect_stdout(io.StringIO()):
        start = time.perf_counter()
        dt = gt.loadRes(results)
        loaded = time.perf_counter()
        coco_eval = COCOeval(gt, dt, iouType=iou_type)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
        done = time.perf_counter()
    return loaded - start, done - loaded, coco_eval


def time_detzoo(dataset: dict, results: list[dict], iou_type: str):
    gt = fresh_coco(dataset)
    gc.collect()
    start = time.perf_counter()
    evaluated = run_cocoeval(gt, results, iou_type=iou_type)
    _ = evaluated.stats  # summarize() (a cached property) inside the timing, as time_pycocotools times it
    return time.perf_counter() - start, evaluated


def benchmark(dataset: dict, results: list[dict], iou_type: str, repeats: int) -> dict:
    times: dict[str, list[float]] = {"pycocotools_loadres": [], "pycocotools_eval": [], "detzoo": []}
    for round_ in range(repeats):
        for tool in ("pycocotools", "detzoo") if round_ % 2 == 0 else ("detzoo", "pycocotools"):
            if tool == "pycocotools":
                load_s, eval_s, reference = time_pycocotools(dataset, results, iou_type)
                times["pycocotools_loadres"].append(load_s)
                times["pycocotools_eval"].append(eval_s)
            else:
                seconds, evaluated = time_detzoo(dataset, results, iou_type)
                times["detzoo"].append(seconds)
        print(f"  round {round_ + 1}/{repeats}: pycocotools loadRes {times['pycocotools_loadres'][-1]:.3f} s + "
              f"eval {times['pycocotools_eval'][-1]:.3f} s, detzoo {times['detzoo'][-1]:.3f} s", flush=True)
    median = {name: float(np.median(values)) for name, values in times.items()}
    identical = {key: bool(np.array_equal(evaluated.eval[key], reference.eval[key]))
                 for key in ("precision", "recall", "scores")}  # fmt: skip
    identical["stats"] = bool(np.array_equal(evaluated.stats, reference.stats))
    return {
        "iou_type": iou_type,
        "detections": len(results),
        "images": len({r["image_id"] for r in results}),
        "ground_truth_objects": len(dataset["annotations"]),
        "seconds": times,
        "median_s": median,
        "speedup_eval": median["pycocotools_eval"] / median["detzoo"],
        "speedup_with_loadres": (median["pycocotools_loadres"] + median["pycocotools_eval"]) / median["detzoo"],
        "identical": identical,
        "precision_max_abs_diff": float(np.abs(evaluated.eval["precision"] - reference.eval["precision"]).max()),
        "stats": evaluated.stats.tolist(),
    }


def processor() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.is_file() else []  # fmt: skip
    return names[0] if names else platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ann", type=Path, default=COCO128 / "instances_train2017.json", help="ground truth, boxes")
    parser.add_argument("--segm-ann", type=Path, default=COCO128 / "instances_seg_train2017.json",
                        help="ground truth with polygons, masks")  # fmt: skip
    parser.add_argument("--types", nargs="+", choices=("bbox", "segm"), default=["bbox", "segm"])
    parser.add_argument("--copies", type=int, default=25, help="jittered copies per object")
    parser.add_argument("--false-positives", type=int, default=30, help="random boxes per image")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the figures here")
    add_malloc_argument(parser)
    args = parser.parse_args(argv)
    retained = set_malloc(args.malloc)
    record = {
        "command": shlex.join([".venv/bin/python", "benchmarks/coco_eval_speed.py", *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "processor": processor(), "loadavg_before": os.getloadavg(),
                    "freed_memory_retained": retained},
        "versions": {"python": platform.python_version(), "numpy": np.__version__,
                     "pycocotools": importlib.metadata.version("pycocotools")},  # fmt: skip
        "runs": [],
    }
    for iou_type in args.types:
        dataset = load_dataset(args.ann if iou_type == "bbox" else args.segm_ann)
        results = make_results(dataset, masks=iou_type == "segm", copies=args.copies,
                               false_positives=args.false_positives, seed=args.seed)  # fmt: skip
        print(f"{iou_type}: {len(results)} detections on {len({r['image_id'] for r in results})} images, "
              f"{len(dataset['annotations'])} ground-truth objects", flush=True)  # fmt: skip
        run = benchmark(dataset, results, iou_type, args.repeats)
        median = run["median_s"]
        print(f"{iou_type}: median pycocotools evaluate+accumulate+summarize {median['pycocotools_eval']:.3f} s "
              f"(+ loadRes {median['pycocotools_loadres']:.3f} s), detzoo {median['detzoo']:.3f} s: "
              f"{run['speedup_eval']:.1f}x ({run['speedup_with_loadres']:.1f}x with loadRes); identical "
              f"{run['identical']}, precision max |diff| {run['precision_max_abs_diff']}")  # fmt: skip
        record["runs"].append(run)
    record["machine"]["loadavg_after"] = os.getloadavg()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
