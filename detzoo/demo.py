"""``make demo``: synthetic shapes -> train Faster R-CNN R-18-FPN on the CPU -> COCO
evaluation -> drawn predictions and loss, lr and AP curves, all under ``demo_out/``."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from detzoo.allocator import retain_freed_memory
from detzoo.api import load_model
from detzoo.config import apply_overrides, load_config
from detzoo.data.synthetic import data_overrides, make_synthetic_coco
from detzoo.engine.trainer import FINAL, train
from detzoo.evaluation.coco import format_table
from detzoo.tools.plot import plot_logs
from detzoo.visualize import draw_detections

CONFIG = Path(__file__).resolve().parent / "configs" / "demo" / "faster_rcnn_r18_fpn_synth.py"


def main(argv: list[str] | None = None) -> None:
    retain_freed_memory()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="demo_out")
    parser.add_argument("--train-images", type=int, default=1000)
    parser.add_argument("--val-images", type=int, default=100)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    start = time.time()
    out = Path(args.out)
    for split, n, seed in (("train", args.train_images, 0), ("val", args.val_images, 1)):
        make_synthetic_coco(out / "synth" / split, num_images=n, seed=seed)
    cfg = load_config(CONFIG)
    cfg = apply_overrides(
        cfg,
        [
            *data_overrides(out / "synth"),
            *args.set,
        ],
    )
    work_dir = out / "work"
    (work_dir / "log.jsonl").unlink(missing_ok=True)
    metrics = train(cfg, work_dir=work_dir)
    detector = load_model(checkpoint=work_dir / FINAL)
    images = sorted((out / "synth" / "val" / "images").glob("*.png"))[:6]
    (out / "predictions").mkdir(exist_ok=True)
    for path, pred in zip(images, detector.predict(images)):
        from PIL import Image

        with Image.open(path) as im:
            draw_detections(im.resize((256, 256)), _scaled(pred, 2.0), score_thresh=0.5).save(
                out / "predictions" / path.name
            )
    plot_logs([work_dir / "log.jsonl"], out / "curves.png")
    elapsed = time.time() - start
    (out / "metrics.json").write_text(json.dumps({**metrics, "seconds": elapsed}, indent=1))
    print(f"\nbox AP on {args.val_images} synthetic validation images:\n{format_table(metrics['bbox'])}")
    print(f"demo finished in {elapsed / 60:.1f} min; drawn predictions in {out / 'predictions'}, "
          f"curves in {out / 'curves.png'}")


def _scaled(pred: dict, factor: float) -> dict:
    return {**pred, "boxes": pred["boxes"] * factor}


if __name__ == "__main__":
    main()
