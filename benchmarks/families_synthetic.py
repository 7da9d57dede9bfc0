"""Each two-stage family learns: RPN, Fast R-CNN (on that RPN's proposals), Faster R-CNN
C4, Mask R-CNN and Keypoint R-CNN, each trained from scratch on the CPU on synthetic data
with the same budget, then evaluated (AR for the RPN, COCO AP for the rest).

    .venv/bin/python benchmarks/families_synthetic.py --iters 400
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from detzoo.cli import main as cli
from detzoo.config import apply_overrides, load_config
from detzoo.data.synthetic import SHAPES, data_overrides, make_synthetic_coco
from detzoo.engine.trainer import FINAL, train

CONFIGS = Path(__file__).resolve().parent / "configs"
FAMILIES = ["rpn", "fast", "c4", "mask", "keypoint"]


def run(name: str, data: Path, out: Path, iters: int, extra: list[str]) -> dict:
    overrides = [
        *data_overrides(data),
        f"schedule={{'iters': {iters}, 'steps': ({int(iters * 0.75)}, {int(iters * 0.9)})}}",
        "runtime.eval_interval=0",
        "runtime.device='cpu'",
        *extra,
    ]
    cfg = apply_overrides(load_config(CONFIGS / f"{name}.py"), overrides)
    start = time.time()
    metrics = train(cfg, work_dir=out / name)
    return {"metrics": metrics, "minutes": (time.time() - start) / 60, "overrides": overrides}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=400)
    parser.add_argument("--train-images", type=int, default=600)
    parser.add_argument("--val-images", type=int, default=100)
    parser.add_argument("--out", default="benchmarks/out/families")
    parser.add_argument("--only", nargs="+", choices=FAMILIES, default=FAMILIES, help="run these families only")
    args = parser.parse_args()
    out = Path(args.out)
    shapes, people = out / "shapes", out / "people"
    for root, categories in ((shapes, SHAPES), (people, ("person",))):
        for split, n, seed in (("train", args.train_images, 0), ("val", args.val_images, 1)):
            make_synthetic_coco(root / split, num_images=n, seed=seed, categories=categories)

    report = {}
    if {"rpn", "fast"} & set(args.only):
        report["rpn_r18_fpn_synth"] = run("rpn_r18_fpn_synth", shapes, out, args.iters, [])
    if "fast" in args.only:
        proposals = {}
        for split in ("train", "val"):
            proposals[split] = out / f"rpn_proposals_{split}.npz"
            sets = [f"data.val.ann_file={shapes / split / 'annotations.json'}",
                    f"data.val.img_dir={shapes / split / 'images'}"]
            cli(["test", str(CONFIGS / "rpn_r18_fpn_synth.py"), str(out / "rpn_r18_fpn_synth" / FINAL),
                 "--out", str(proposals[split]), *[a for s in sets for a in ("--set", s)]])
        fast = [f"data.{split}.proposals_file={proposals[split]}" for split in ("train", "val")]
        report["fast_rcnn_r18_fpn_synth"] = run("fast_rcnn_r18_fpn_synth", shapes, out, args.iters, fast)
    for family, name in (("c4", "faster_rcnn_r18_c4_synth"), ("mask", "mask_rcnn_r18_fpn_synth")):
        if family in args.only:
            report[name] = run(name, shapes, out, args.iters, [])
    if "keypoint" in args.only:
        report["keypoint_rcnn_r18_fpn_synth"] = run("keypoint_rcnn_r18_fpn_synth", people, out, args.iters, [])

    (out / f"report_{'_'.join(args.only)}.json").write_text(json.dumps(report, indent=1))
    print(f"\n{args.iters} iterations at batch 8 on {args.train_images} synthetic 128-px images, "
          f"evaluated on {args.val_images}:")
    for name, r in report.items():
        values = ", ".join(
            f"{kind} " + " ".join(f"{k} {100 * v:.1f}" for k, v in m.items() if k in ("AP", "AP50", "AR@100", "AR@300"))
            for kind, m in r["metrics"].items()
        )
        print(f"{name:30s} {values}  ({r['minutes']:.1f} min)")


if __name__ == "__main__":
    main()
