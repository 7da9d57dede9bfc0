"""detzoo vs torchvision: the same Faster R-CNN R-18-FPN (128-channel FPN, 512-wide box
head, 64 RoIs per image, anchors 16-256), trained from scratch on the same synthetic
images in the same order, batch, lr schedule and iteration budget, on the same threads,
then evaluated by the same COCO evaluation. Prints box AP and s/iter side by side.

    .venv/bin/python benchmarks/train_synthetic.py --iters 1000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torchvision.models import resnet18
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from detzoo.allocator import retain_freed_memory
from detzoo.config import apply_overrides, load_config
from detzoo.data.coco import CocoDataset
from detzoo.data.loader import build_test_loader, build_train_loader
from detzoo.data.synthetic import data_overrides, make_synthetic_coco
from detzoo.data.transforms import build_transforms
from detzoo.engine.schedule import WarmupMultiStepLR, scale_lr
from detzoo.engine.trainer import train
from detzoo.evaluation.coco import evaluate_coco, format_table, instances_to_coco_results
from detzoo.structures import Instances

ROOT = Path(__file__).resolve().parents[1]


def torchvision_model(cfg: dict) -> FasterRCNN:
    m = cfg["model"]
    channels = m["neck"]["out_channels"]
    backbone = BackboneWithFPN(
        resnet18(),
        return_layers={"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"},
        in_channels_list=[64, 128, 256, 512],
        out_channels=channels,
        extra_blocks=LastLevelMaxPool(),
    )
    rpn, roi = m["dense_head"], m["roi_heads"]
    sizes = tuple(tuple(s) for s in rpn["anchor_generator"]["sizes"])
    fc = roi["box_head"]["fc_dim"]
    return FasterRCNN(
        backbone,
        min_size=cfg["data"]["test_scale"],
        max_size=cfg["data"]["max_size"],
        rpn_anchor_generator=AnchorGenerator(sizes, (tuple(rpn["anchor_generator"]["aspect_ratios"]),) * len(sizes)),
        rpn_pre_nms_top_n_train=rpn["pre_nms_topk_train"],
        rpn_post_nms_top_n_train=rpn["post_nms_topk_train"],
        rpn_pre_nms_top_n_test=rpn["pre_nms_topk_test"],
        rpn_post_nms_top_n_test=rpn["post_nms_topk_test"],
        box_batch_size_per_image=roi["batch_size_per_image"],
        box_head=TwoMLPHead(channels * 7 * 7, fc),
        box_predictor=FastRCNNPredictor(fc, roi["num_classes"] + 1),
    )


def train_torchvision(cfg: dict, iters: int, steps: tuple[int, ...], warmup: int = 10) -> tuple[dict, float]:
    """Train ``torchvision_model(cfg)`` as detzoo's trainer trains ``cfg`` and evaluate it on
    ``data.val``: box metrics and the mean s/iter after ``warmup`` iterations."""
    data, optim, seed = cfg["data"], cfg["optim"], cfg["runtime"]["seed"]
    torch.manual_seed(seed)
    model = torchvision_model(cfg).train()
    transform = build_transforms(train=True, scales=data["train_scales"], max_size=data["max_size"])
    dataset = CocoDataset(data["train"]["ann_file"], data["train"]["img_dir"], transforms=transform,
                          filter_empty=True, seed=seed)
    batch = data["images_per_gpu"]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=scale_lr(optim["lr"], base_batch_size=optim["base_batch_size"], batch_size=batch),
                          momentum=optim["momentum"], weight_decay=optim["weight_decay"])
    sched = WarmupMultiStepLR(opt, steps=steps, gamma=optim["gamma"], warmup_iters=optim["warmup_iters"],
                              warmup_factor=optim["warmup_factor"])
    times, it, epoch = [], 0, 0
    while it < iters:
        tick = time.perf_counter()  # s/iter includes data loading, as detzoo's log does
        for samples in build_train_loader(dataset, batch_size=batch, num_workers=data["num_workers"], seed=seed,
                                          epoch=epoch):
            targets = [{"boxes": s.instances.boxes, "labels": s.instances.labels + 1} for s in samples]
            losses = model([s.image / 255 for s in samples], targets)
            opt.zero_grad()
            sum(losses.values()).backward()
            opt.step()
            sched.step()
            times.append(time.perf_counter() - tick)
            tick = time.perf_counter()
            it += 1
            if it == iters:
                break
        epoch += 1
    model.eval()
    val = CocoDataset(data["val"]["ann_file"], data["val"]["img_dir"],
                      transforms=build_transforms(train=False, scales=(data["test_scale"],), max_size=data["max_size"]))
    results = []
    with torch.no_grad():
        for samples in build_test_loader(val):
            out = model([s.image / 255 for s in samples])
            preds = [Instances(boxes=o["boxes"], labels=o["labels"] - 1, scores=o["scores"]) for o in out]
            results += instances_to_coco_results([s.image_id for s in samples], preds, val.cat_ids)
    return evaluate_coco(val.coco, results, img_ids=val.image_ids), float(np.mean(times[warmup:]))


def train_detzoo(cfg: dict, work: Path, warmup_records: int = 1) -> tuple[dict, float]:
    """``detzoo.engine.trainer.train(cfg)`` in ``work``: box metrics and the mean of the logged
    s/iter after the first ``warmup_records`` log records (each the mean over
    ``runtime.log_interval`` iterations; the first holds start-up)."""
    (work / "log.jsonl").unlink(missing_ok=True)
    metrics = train(cfg, work_dir=work)["bbox"]
    records = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    times = [r["time"] for r in records if "time" in r]
    return metrics, float(np.mean(times[warmup_records:] or times))


def synthetic_config(out: Path, iters: int, train_images: int, val_images: int,
                     overrides: tuple[str, ...] = ()) -> tuple[dict, tuple[int, ...]]:
    """The demo config on synthetic shapes written under ``out / "synth"`` (train / val),
    ``iters`` iterations with lr steps at 75% and 90% (those past 0, once each), evaluated at
    the end only, on the CPU, then ``overrides``; and those steps."""
    for split, n, seed in (("train", train_images, 0), ("val", val_images, 1)):
        make_synthetic_coco(out / "synth" / split, num_images=n, seed=seed)
    steps = tuple(sorted({int(iters * 0.75), int(iters * 0.9)} - {0}))
    cfg = apply_overrides(load_config(ROOT / "detzoo/configs/demo/faster_rcnn_r18_fpn_synth.py"), [
        *data_overrides(out / "synth"),
        f"schedule={{'iters': {iters}, 'steps': {steps}}}",
        "runtime.eval_interval=0",
        "runtime.device='cpu'",
        *overrides,
    ])
    return cfg, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=1000)
    parser.add_argument("--train-images", type=int, default=1000)
    parser.add_argument("--val-images", type=int, default=100)
    parser.add_argument("--out", default="benchmarks/out/train_synthetic")
    args = parser.parse_args()
    retain_freed_memory()  # as detzoo's commands
    out = Path(args.out)
    cfg, steps = synthetic_config(out, args.iters, args.train_images, args.val_images)
    print(f"torch threads: {torch.get_num_threads()}")
    tv_metrics, tv_time = train_torchvision(cfg, args.iters, steps)
    dz_metrics, dz_time = train_detzoo(cfg, out / "detzoo")
    print(f"\n{args.iters} iterations, batch {cfg['data']['images_per_gpu']}, {args.train_images} training / "
          f"{args.val_images} validation images of 128 px")
    print(f"torchvision box AP:\n{format_table(tv_metrics)}\ndetzoo box AP:\n{format_table(dz_metrics)}")
    print(f"{'':12s} {'AP':>6s} {'AP50':>6s} {'s/iter':>7s}")
    print(f"{'torchvision':12s} {100 * tv_metrics['AP']:6.1f} {100 * tv_metrics['AP50']:6.1f} {tv_time:7.3f}")
    print(f"{'detzoo':12s} {100 * dz_metrics['AP']:6.1f} {100 * dz_metrics['AP50']:6.1f} {dz_time:7.3f}")
    print(f"ratio detzoo/torchvision: AP {dz_metrics['AP'] / max(tv_metrics['AP'], 1e-9):.2f}, "
          f"s/iter {dz_time / tv_time:.2f}")


if __name__ == "__main__":
    main()
