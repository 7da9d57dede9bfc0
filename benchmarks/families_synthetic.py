"""Each detector family learns: RPN, Fast R-CNN (on that RPN's proposals), Faster R-CNN
C4, Mask R-CNN, Keypoint R-CNN, RetinaNet, RetinaNet NAS-FPN, Faster / Mask R-CNN FPG and
Faster R-CNN GN+WS, each trained from scratch on the CPU on synthetic data with the same
budget, then evaluated (AR for the RPN, COCO AP for the rest).

    .venv/bin/python benchmarks/families_synthetic.py --iters 400
    .venv/bin/python benchmarks/families_synthetic.py --iters 400 --only retinanet --set optim.lr=0.08
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from detzoo.cli import main as cli
from detzoo.config import apply_overrides, load_config
from detzoo.data.synthetic import SHAPES, data_overrides, make_synthetic_coco
from detzoo.engine.trainer import FINAL, train

CONFIGS = Path(__file__).resolve().parent / "configs"
DATASETS = {"shapes": SHAPES, "people": ("person",)}
# family -> (config in benchmarks/configs, dataset); run in this order ("fast" reads the
# proposals of the "rpn" model, which it trains first when "rpn" is not selected itself)
FAMILIES = {
    "rpn": ("rpn_r18_fpn_synth", "shapes"),
    "fast": ("fast_rcnn_r18_fpn_synth", "shapes"),
    "c4": ("faster_rcnn_r18_c4_synth", "shapes"),
    "mask": ("mask_rcnn_r18_fpn_synth", "shapes"),
    "keypoint": ("keypoint_rcnn_r18_fpn_synth", "people"),
    "retinanet": ("retinanet_r18_fpn_synth", "shapes"),
    "nasfpn": ("retinanet_r18_nasfpn_synth", "shapes"),
    "fpg_faster": ("faster_rcnn_r18_fpg_synth", "shapes"),
    "fpg_mask": ("mask_rcnn_r18_fpg_synth", "shapes"),
    "gn_ws": ("faster_rcnn_r18_fpn_gn_ws_synth", "shapes"),
}
METRICS = ("AP", "AP50", "AR@100", "AR@300")


def run(name: str, data: Path, out: Path, iters: int, extra: list[str]) -> dict:
    overrides = [
        *data_overrides(data),
        f"schedule={{'iters': {iters}, 'steps': ({int(iters * 0.75)}, {int(iters * 0.9)})}}",
        "runtime.eval_interval=0",
        "runtime.device='cpu'",
        *extra,
    ]
    cfg = apply_overrides(load_config(CONFIGS / f"{name}.py"), overrides)
    log = out / name / "log.jsonl"
    log.unlink(missing_ok=True)  # the trainer appends; keep only this run's records
    start = time.time()
    metrics = train(cfg, work_dir=out / name)
    minutes = (time.time() - start) / 60
    records = [json.loads(line) for line in log.read_text().splitlines()]
    s_iter = float(np.mean([r["time"] for r in records if "time" in r]))
    return {"metrics": metrics, "minutes": minutes, "s_iter": s_iter, "overrides": overrides}


def rpn_proposals(shapes: Path, out: Path) -> list[str]:
    """Write the trained RPN's proposals for the train and val images; the Fast R-CNN
    overrides that read them."""
    proposals = {}
    for split in ("train", "val"):
        proposals[split] = out / f"rpn_proposals_{split}.npz"
        sets = [f"data.val.ann_file={shapes / split / 'annotations.json'}",
                f"data.val.img_dir={shapes / split / 'images'}"]
        cli(["test", str(CONFIGS / f"{FAMILIES['rpn'][0]}.py"), str(out / FAMILIES["rpn"][0] / FINAL),
             "--out", str(proposals[split]), *[a for s in sets for a in ("--set", s)]])
    return [f"data.{split}.proposals_file={proposals[split]}" for split in ("train", "val")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=400)
    parser.add_argument("--train-images", type=int, default=600)
    parser.add_argument("--val-images", type=int, default=100)
    parser.add_argument("--out", default="benchmarks/out/families")
    parser.add_argument("--only", nargs="+", choices=list(FAMILIES), default=list(FAMILIES),
                        help="run these families only")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every family run, e.g. optim.lr=0.08 (repeatable)")
    args = parser.parse_args()
    out = Path(args.out)
    selected = set(args.only) | ({"rpn"} if "fast" in args.only else set())
    families = [f for f in FAMILIES if f in selected]
    for dataset in sorted({FAMILIES[f][1] for f in families}):
        for split, n, seed in (("train", args.train_images, 0), ("val", args.val_images, 1)):
            make_synthetic_coco(out / dataset / split, num_images=n, seed=seed, categories=DATASETS[dataset])

    report = {}
    for family in families:
        name, dataset = FAMILIES[family]
        extra = rpn_proposals(out / dataset, out) if family == "fast" else []
        report[name] = run(name, out / dataset, out, args.iters, [*extra, *args.set])

    (out / f"report_{'_'.join(args.only)}.json").write_text(json.dumps(report, indent=1))
    print(f"\n{args.iters} iterations at batch 8 on {args.train_images} synthetic 128-px images, "
          f"evaluated on {args.val_images}:")
    for name, r in report.items():
        values = ", ".join(
            f"{kind} " + " ".join(f"{k} {100 * v:.1f}" for k, v in m.items() if k in METRICS)
            for kind, m in r["metrics"].items()
        )
        print(f"{name:32s} {values}  ({r['s_iter']:.2f} s/iter, {r['minutes']:.1f} min)")


if __name__ == "__main__":
    main()
