"""Transfer pays: Faster R-CNN R-18-FPN (the demo's config) trained on one synthetic set
(circles, squares, triangles), then fine-tuned with ``--load-from`` on a second, smaller set
with new classes (pentagons, hexagons, and squares, whose rows come from the first model by
name), against the same model trained from scratch on the second set for the same number of
iterations. Prints box AP on the second set's validation images for both.

    .venv/bin/python benchmarks/finetune_synthetic.py --pretrain-iters 600 --iters 300
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from detzoo.api import train
from detzoo.config import apply_overrides, load_config
from detzoo.data.synthetic import SHAPES, data_overrides, make_synthetic_coco
from detzoo.engine.trainer import FINAL

NEW_CLASSES = ("pentagon", "hexagon", "square")


def _dataset(root: Path, categories, num_train: int, seed: int) -> Path:
    if not (root / "val" / "annotations.json").is_file():
        make_synthetic_coco(root / "train", num_images=num_train, seed=seed, categories=categories)
        make_synthetic_coco(root / "val", num_images=100, seed=seed + 1, categories=categories)
    return root


def _run(out: Path, name: str, data: Path, iters: int, sets: list[str]) -> dict:
    cfg = apply_overrides(load_config("faster_rcnn_r18_fpn_synth"), [
        *data_overrides(data), f"schedule.iters={iters}", f"schedule.steps=({round(iters * 0.75)},)",
        "runtime.eval_interval=0", f"runtime.checkpoint_interval={iters}", *sets,
    ])
    start = time.perf_counter()
    metrics = train(cfg, work_dir=out / name)
    return {"box_AP": 100 * metrics["bbox"]["AP"], "AP50": 100 * metrics["bbox"]["AP50"],
            "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrain-iters", type=int, default=600)
    parser.add_argument("--iters", type=int, default=300, help="iterations on the second set, both runs")
    parser.add_argument("--num-train", type=int, default=200, help="training images of the second set")
    parser.add_argument("--out", default="work_dirs/finetune_synthetic")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    out = Path(args.out)
    first = _dataset(out / "data_first", SHAPES, 1000, seed=0)
    second = _dataset(out / "data_second", NEW_CLASSES, args.num_train, seed=10)
    pretrained = _run(out, "pretrain", first, args.pretrain_iters, [])
    classes = [f"model.roi_heads.num_classes={len(NEW_CLASSES)}"]
    finetuned = _run(out, "finetune", second, args.iters,
                     [*classes, f"runtime.load_from={str(out / 'pretrain' / FINAL)!r}"])
    scratch = _run(out, "scratch", second, args.iters, classes)
    result = {"pretrain_iters": args.pretrain_iters, "iters": args.iters, "num_train": args.num_train,
              "pretrain_on_first": pretrained, "finetuned": finetuned, "from_scratch": scratch}
    print(f"second set ({', '.join(NEW_CLASSES)}; {args.num_train} training images), {args.iters} iterations:")
    for label, r in (("fine-tuned from the first set's model", finetuned), ("from scratch", scratch)):
        print(f"  {label:40s} box AP {r['box_AP']:5.1f}  AP50 {r['AP50']:5.1f}  ({r['seconds']:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
