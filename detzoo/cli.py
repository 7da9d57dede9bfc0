"""The ``detzoo`` command (also ``python -m detzoo``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from detzoo.config import ConfigError, apply_overrides, load_config
from detzoo.engine.checkpoint import CheckpointError


def _config(args: argparse.Namespace) -> dict:
    return apply_overrides(load_config(args.config), args.set)


def cmd_train(args: argparse.Namespace) -> None:
    from detzoo.engine.trainer import train

    work_dir = args.work_dir or Path("work_dirs") / Path(str(args.config)).stem
    train(_config(args), work_dir=work_dir, resume=args.resume)


def cmd_test(args: argparse.Namespace) -> None:
    from detzoo.api import load_model
    from detzoo.data.build import build_dataset
    from detzoo.engine.evaluate import evaluate
    from detzoo.evaluation.coco import format_table

    detector = load_model(args.config, args.checkpoint, device=args.device, overrides=args.set)
    dataset = build_dataset(detector.config["data"], "val", detector.model.pixel_format, train=False)
    metrics = evaluate(detector.model, dataset, cat_ids=detector.cat_ids, out=args.out)
    for kind, values in metrics.items():
        print(f"{kind}\n{format_table(values)}")
    if args.out:
        print(f"wrote {args.out}")


def cmd_infer(args: argparse.Namespace) -> None:
    from PIL import Image

    from detzoo.api import load_model
    from detzoo.visualize import draw_detections, to_jsonable

    detector = load_model(args.config, args.checkpoint, device=args.device, overrides=args.set)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = {}
    for path in args.images:
        pred = detector.predict(path)[0]
        with Image.open(path) as im:
            draw_detections(im, pred, score_thresh=args.score_thresh).save(out / (Path(path).stem + ".png"))
        records[str(path)] = to_jsonable(pred)
    (out / "predictions.json").write_text(json.dumps(records))
    print(f"wrote {len(records)} drawn images and predictions.json to {out}")


def cmd_convert(args: argparse.Namespace) -> None:
    from detzoo.api import build_detector
    from detzoo.config import load_config
    from detzoo.engine.checkpoint import load_checkpoint, save_checkpoint
    from detzoo.zoo.converters import mmdet, torchvision

    checkpoint = load_checkpoint(args.src)
    if args.source == "torchvision":
        converted = torchvision.convert(checkpoint.get("model", checkpoint))
    else:
        converted = mmdet.convert(checkpoint)
    # the result must load strictly into the config before anything is written
    build_detector(load_config(args.config), converted, source=args.src)
    save_checkpoint(args.out, converted)
    print(f"wrote {args.out}")


def cmd_synth(args: argparse.Namespace) -> None:
    from detzoo.data.synthetic import make_synthetic_coco

    out = make_synthetic_coco(
        args.out,
        num_images=args.num_images,
        image_size=args.size,
        max_objects=args.max_objects,
        seed=args.seed,
        categories=args.categories.split(","),
    )
    print(f"wrote {args.num_images} images to {out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="detzoo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("config", help="config file or name, e.g. faster_rcnn_r50_fpn_1x_coco")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")

    p = sub.add_parser("train", help="train a config")
    with_config(p)
    p.add_argument("--work-dir", help="default: work_dirs/<config name>")
    p.add_argument("--resume", action="store_true", help="continue from <work-dir>/checkpoint.pth")
    p.set_defaults(fn=cmd_train)

    for name, fn, help_ in (("test", cmd_test, "evaluate a checkpoint on data.val"),
                            ("infer", cmd_infer, "draw predictions on images")):
        p = sub.add_parser(name, help=help_)
        with_config(p)
        p.add_argument("checkpoint")
        p.add_argument("--device", default="cpu")
        p.set_defaults(fn=fn)
        if name == "test":
            p.add_argument("--out", help="write the COCO results json here (an RPN: the proposals .npz)")
        else:
            p.add_argument("images", nargs="+")
            p.add_argument("--out", required=True, help="folder for drawn PNGs and predictions.json")
            p.add_argument("--score-thresh", type=float, default=0.5)

    p = sub.add_parser("convert", help="convert another toolbox's checkpoint")
    p.add_argument("--from", dest="source", choices=["torchvision", "mmdet"], required=True)
    p.add_argument("src")
    p.add_argument("--config", required=True, help="the detzoo config the result must load into")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_convert)

    data = sub.add_parser("data", help="datasets").add_subparsers(dest="data_command", required=True)
    p = data.add_parser("synth", help="write a synthetic COCO-format dataset of shapes")
    p.add_argument("--out", required=True)
    p.add_argument("--num-images", type=int, default=100)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--max-objects", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--categories",
        default="circle,square,triangle",
        help="comma-separated, from circle, square, triangle and person (a stick figure with 17 keypoints)",
    )
    p.set_defaults(fn=cmd_synth)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except (ConfigError, CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"detzoo {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
