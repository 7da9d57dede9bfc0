"""The ``detzoo`` command (also ``python -m detzoo``)."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tqdm import tqdm

import detzoo
from detzoo.allocator import retain_freed_memory
from detzoo.config import apply_overrides, load_config
from detzoo.errors import InputError, MissingFileError, UserError
from detzoo.zoo.converters import CONVERTERS


@dataclass(frozen=True)
class Command:
    """A command: its arguments, added to its subparser by ``add_arguments``, and ``run`` with them."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], None]

    def add_to(self, subparsers: argparse._SubParsersAction) -> None:
        parser = subparsers.add_parser(self.name, help=self.help)
        self.add_arguments(parser)
        parser.set_defaults(fn=self.run)


@dataclass(frozen=True)
class Group:
    """A command of commands (``detzoo zoo list``): the name of the one given is ``args.<name>_command``."""

    name: str
    help: str
    commands: tuple[Command, ...]

    def add_to(self, subparsers: argparse._SubParsersAction) -> None:
        parser = subparsers.add_parser(self.name, help=self.help)
        sub = parser.add_subparsers(dest=f"{self.name}_command", required=True)
        for command in self.commands:
            command.add_to(sub)


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="config file or name, e.g. faster_rcnn_r50_fpn_1x_coco")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")


def _config(args: argparse.Namespace) -> dict:
    return apply_overrides(load_config(args.config), args.set)


def add_checkpoint_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="checkpoint file, or a zoo model name for its published weights")


def add_amp_argument(p: argparse.ArgumentParser) -> None:
    """``--amp``, which ``main`` turns into ``--set runtime.amp=...``."""
    p.add_argument("--amp", choices=["bf16", "fp16"],
                   help="inference under autocast in this dtype: --set runtime.amp=... (fp16: CUDA only)")


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The trained model that test and infer run: config, checkpoint, device and autocast."""
    add_config_arguments(p)
    add_checkpoint_argument(p)
    p.add_argument("--device", default="cpu")
    add_amp_argument(p)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--work-dir", help="default: work_dirs/<config name>")
    p.add_argument("--resume", action="store_true", help="continue from <work-dir>/checkpoint.pth")
    p.add_argument("--load-from", metavar="CKPT",
                   help="start from this trained detector (fine-tuning; runtime.load_from): a checkpoint file of "
                        "detzoo, torchvision, mmdetection, detectron2 or Detectron, or a zoo model name; "
                        "iteration 0, fresh optimizer, class rows matched by name")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in a work dir that holds an earlier run's checkpoint, removing that run's files")


def cmd_train(args: argparse.Namespace) -> None:
    from detzoo.api import train
    from detzoo.engine.hooks import NonFiniteLossError
    from detzoo.engine.workdir import CHECKPOINT, TrainingInterrupted

    work_dir = Path(args.work_dir or Path("work_dirs") / Path(str(args.config)).stem)

    def again(resume: bool, sets: list[str]) -> str:
        """The command that goes on: resuming, or starting afresh (over this run's checkpoint)."""
        start = ["--resume"] if resume else ["--overwrite"] if (work_dir / CHECKPOINT).exists() else []
        return shlex.join(["detzoo", "train", str(args.config), "--work-dir", str(work_dir), *start,
                           *(arg for s in sets for arg in ("--set", s))])

    cfg = _config(args)
    if args.load_from is not None:
        cfg = apply_overrides(cfg, [f"runtime.load_from={args.load_from!r}"])
    try:
        train(cfg, work_dir=work_dir, resume=args.resume, overwrite=args.overwrite)
    except NonFiniteLossError as e:  # add the command that goes on with the lower lr
        sets = [s for s in args.set if not s.startswith("optim.lr=")] + [f"optim.lr={e.lr:g}"]
        raise NonFiniteLossError(f"{e}: {again(e.resumable, sets)}", lr=e.lr, resumable=e.resumable) from e
    except TrainingInterrupted as e:
        raise TrainingInterrupted(f"{e}: {again(e.resumable, args.set)}", resumable=e.resumable) from None


def add_test_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--out", help="write the COCO results json here (an RPN: the proposals .npz)")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation as data.test_time_aug says (boxes and masks)")


def cmd_test(args: argparse.Namespace) -> None:
    from detzoo.api import load_model
    from detzoo.data.build import build_dataset
    from detzoo.engine import distributed
    from detzoo.files import refuse_overwriting
    from detzoo.engine.evaluate import compare_classes, evaluate
    from detzoo.engine.tta import build_tta
    from detzoo.evaluation.coco import format_table

    device = distributed.init_from_env(args.device)  # under torchrun each process runs a share of the images
    detector = load_model(args.config, args.checkpoint, device=device, overrides=args.set)
    tta = build_tta(detector.config["data"], detector.model) if args.tta else None
    dataset = build_dataset(detector.config["data"], "val", detector.model.pixel_format, train=False)
    if not detector.model.is_proposal_generator:  # an RPN's proposals have no class
        compare_classes(detector.cat_ids, detector.class_names, f"checkpoint {args.checkpoint}", dataset)
    if args.out:  # before the inference
        refuse_overwriting([args.out], [args.config, args.checkpoint, dataset.ann_file, dataset.proposals_file])
    metrics = evaluate(
        detector.model, dataset, cat_ids=detector.cat_ids, out=args.out, tta=tta,
        amp=detector.config["runtime"].get("amp"),
    )
    if not distributed.is_main():
        return
    for kind, values in metrics.items():
        print(f"{kind}\n{format_table(values)}")
    if args.out:
        print(f"wrote {args.out}")


def _image_files(paths: list[str]) -> list[Path]:
    """The image files given and those in the folders given (not in their subfolders; by
    the suffixes Pillow reads), each once; a path that is neither is a MissingFileError."""
    from PIL import Image

    suffixes = set(Image.registered_extensions())
    files, missing = [], []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
            if not found:
                raise MissingFileError(f"folder {path} holds no image file Pillow reads (.jpg, .png, ...)")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            missing.append(str(path))
    if missing:
        raise MissingFileError(f"image file(s) not found: {', '.join(missing)}")
    return list(dict.fromkeys(files))


def add_infer_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("images", nargs="+", help="image files, or folders of them")
    p.add_argument("--out", required=True, help="folder for drawn PNGs and predictions.json")
    p.add_argument("--score-thresh", type=float, default=0.5)
    p.add_argument("--backend", default="pytorch", choices=["pytorch", "onnxruntime"],
                   help="onnxruntime: CHECKPOINT is a file of `detzoo export onnx`, run on the CPU")


def cmd_infer(args: argparse.Namespace) -> None:
    from PIL import Image

    from detzoo.api import load_model
    from detzoo.data.images import read_rgb
    from detzoo.files import atomic_write, refuse_overwriting
    from detzoo.visualize import draw_detections, drawing_paths, to_jsonable

    files = _image_files(args.images)  # before the model is loaded
    drawings = drawing_paths(files, args.out)
    refuse_overwriting([*drawings, Path(args.out) / "predictions.json"], [*files, args.config, args.checkpoint])
    if args.backend == "onnxruntime":
        from detzoo.export.onnx import load_onnx_detector

        if args.device != "cpu":
            raise InputError(f"--backend onnxruntime runs on the CPU, not --device {args.device}")
        detector = load_onnx_detector(args.config, args.checkpoint, overrides=args.set)
    else:
        detector = load_model(args.config, args.checkpoint, device=args.device, overrides=args.set)
    # every image is read and predicted before anything is written
    images = [read_rgb(path) for path in files]  # read once: predicted, then drawn
    predictions = [detector.predict(rgb)[0] for rgb in images]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    records = {}
    for path, rgb, pred, drawing in zip(files, images, predictions, drawings):
        image = Image.fromarray(rgb)  # drawn as the model saw it (16-bit scaled, stored frame)
        draw_detections(image, pred, score_thresh=args.score_thresh).save(drawing)
        records[str(path)] = to_jsonable(pred)
    with atomic_write(Path(args.out) / "predictions.json", text=True) as f:
        json.dump(records, f)
    print(f"wrote {len(records)} drawn images and predictions.json to {args.out}")


def add_convert_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="source", choices=list(CONVERTERS), required=True)
    p.add_argument("src")
    p.add_argument("--config", required=True, help="the detzoo config the result must load into")
    p.add_argument("--out", required=True)


def cmd_convert(args: argparse.Namespace) -> None:
    from detzoo.api import build_detector
    from detzoo.config import load_config
    from detzoo.engine.checkpoint import load_checkpoint, save_checkpoint
    from detzoo.errors import CheckpointError
    from detzoo.files import refuse_overwriting
    from detzoo.zoo.converters import convert_checkpoint

    refuse_overwriting([args.out], [args.src, args.config])
    state = load_checkpoint(args.src)
    try:
        converted = convert_checkpoint(state, args.source)
    except ValueError as e:  # the converters' checks of the state dict; their messages do not name the file
        raise CheckpointError(f"{args.src} is not a {args.source} checkpoint detzoo can convert: {e}") from e
    # the result must load strictly into the config before anything is written
    build_detector(load_config(args.config), converted, source=args.src)
    save_checkpoint(args.out, converted)
    print(f"wrote {args.out}")


def add_export_onnx_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    add_checkpoint_argument(p)
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--shape", type=int, nargs=2, metavar=("H", "W"),
                   help="image size to trace with (default: data.test_scale x data.max_size); any size runs")
    p.add_argument("--opset", type=int, help="ONNX opset, 16-20 (default: 17)")


def cmd_export_onnx(args: argparse.Namespace) -> None:
    from detzoo.files import refuse_overwriting
    from detzoo.export.onnx import export_onnx

    refuse_overwriting([args.out], [args.config, args.checkpoint])
    out = export_onnx(args.config, args.checkpoint, args.out, overrides=args.set, shape=args.shape, opset=args.opset)
    print(f"wrote {out}")


def add_publish_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint")
    p.add_argument("--name", help="default: the checkpoint's folder name (detzoo train's work dir: the config name)")
    p.add_argument("--out", help="folder to write to (default: the checkpoint's folder)")


def cmd_publish(args: argparse.Namespace) -> None:
    from detzoo.download import sha256_file
    from detzoo.engine.checkpoint import publish_checkpoint

    src = Path(args.checkpoint)
    published = publish_checkpoint(src, args.out or src.parent, name=args.name or src.absolute().parent.name)
    print(f"{sha256_file(published)}  {published}")  # as sha256sum prints it


def add_verify_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file")
    p.add_argument("--sha256", help="check against this hash (or prefix of 8+ hex digits) instead")


def cmd_verify(args: argparse.Namespace) -> None:
    from detzoo.download import verify_file

    print(f"{args.file}: OK (sha256 {verify_file(args.file, sha256=args.sha256)})")


def add_synth_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True)
    p.add_argument("--num-images", type=int, default=100)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--max-objects", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--categories",
        default="circle,square,triangle",
        help="comma-separated, from circle, square, triangle, pentagon, hexagon and person (a stick figure with 17 "
             "keypoints)",
    )


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


def add_benchmark_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("checkpoint", nargs="?",
                   help="checkpoint file or zoo model name, for inference and FLOPs (default: random init)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: CUDA when available")
    p.add_argument("--images", nargs="+", default=[], help="time inference on these images instead of data.val")
    p.add_argument("--num-images", type=int, help="images timed after the warm-up (default: each input once)")
    p.add_argument("--warmup", type=int, default=5, help="inference warm-up images, not timed")
    p.add_argument("--train-iters", type=int, default=20, help="training iterations timed after the warm-up")
    p.add_argument("--train-warmup", type=int, default=5, help="training warm-up iterations, not timed")
    p.add_argument("--shape", type=int, nargs=2, metavar=("H", "W"),
                   help="input size for FLOPs (default: data.test_scale x data.max_size)")
    p.add_argument("--skip-inference", action="store_true")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--skip-flops", action="store_true")
    p.add_argument("--skip-loader", action="store_true", help="skip timing the data loaders alone")
    p.add_argument("--skip-peak", action="store_true", help="skip measuring the machine's conv peaks")
    p.add_argument("--peak-shape", type=int, nargs=4, metavar=("N", "C", "H", "W"),
                   help="the conv peak's map: a 3x3 C -> C convolution on N x C x H x W (default: 1 256 100 168)")
    p.add_argument("--stage-runs", type=int, default=5,
                   help="runs of the stage split (the first inference image) after the warm-up")
    p.add_argument("--profile", action="store_true",
                   help="split the timed training iterations into data, backbone, neck, dense head, RoI heads, "
                        "backward and optimizer step")
    add_amp_argument(p)
    p.add_argument("--json", help="write the figures here as JSON (what the zoo metafiles record)")


def cmd_benchmark(args: argparse.Namespace) -> None:
    from detzoo.files import atomic_write, refuse_overwriting
    from detzoo.tools.benchmark import benchmark

    if args.json:
        refuse_overwriting([args.json], [args.config, args.checkpoint, *args.images])
    result = benchmark(
        args.config,
        args.checkpoint,
        overrides=args.set,
        device=args.device,
        images=args.images,
        num_images=args.num_images,
        warmup=args.warmup,
        train_iters=args.train_iters,
        train_warmup=args.train_warmup,
        shape=args.shape,
        inference=not args.skip_inference,
        train=not args.skip_train,
        flops=not args.skip_flops,
        loader=not args.skip_loader,
        peak=not args.skip_peak,
        peak_shape=args.peak_shape,
        stage_runs=args.stage_runs,
        profile=args.profile,
        command=args.command_line,
    )
    print(result.text())
    if args.json:
        with atomic_write(args.json, text=True) as f:
            json.dump(result.record(), f, indent=2)
        print(f"wrote {args.json}")


def add_zoo_list_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--family", help="only this collection, e.g. 'Faster R-CNN', fpg, gn+ws")


def cmd_zoo_list(args: argparse.Namespace) -> None:
    from detzoo.zoo.metafile import load_zoo
    from detzoo.zoo.tables import list_lines, select

    print(list_lines(select(load_zoo(), args.family)))


def add_zoo_show_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name")


def cmd_zoo_show(args: argparse.Namespace) -> None:
    from detzoo.zoo.metafile import load_zoo
    from detzoo.zoo.tables import describe

    zoo = load_zoo()
    print(describe(zoo, zoo.find(args.name)))


def add_zoo_table_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="docs/model_zoo.md")


def cmd_zoo_table(args: argparse.Namespace) -> None:
    from detzoo.zoo.metafile import load_zoo
    from detzoo.zoo.tables import write_markdown

    write_markdown(load_zoo(), args.out)
    print(f"wrote {args.out}")


def add_zoo_record_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("record", metavar="RUN.json")
    p.add_argument("--name", help="the zoo model (default: the stem of the record's 'config')")


def cmd_zoo_record(args: argparse.Namespace) -> None:
    from detzoo.zoo.metafile import read_run, record_run

    model = record_run(read_run(args.record), name=args.name)
    run = model.measured[-1]
    print(f"recorded the {run.date} run on {run.device_label} for {model.name} in {model.metafile}")


def add_plot_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("logs", nargs="+", metavar="LOG.jsonl", help="several logs are overlaid")
    p.add_argument("--out", required=True, help="PNG file")
    p.add_argument("--keys", nargs="+", metavar="KEY[,KEY...]",
                   help="one panel each: log fields (loss, loss_cls, lr) or TYPE.METRIC (bbox.AP); "
                        "default: loss with its terms, lr, and AP/AP50 (AR) of each evaluation type")


def cmd_plot(args: argparse.Namespace) -> None:
    from detzoo.files import refuse_overwriting
    from detzoo.tools.plot import plot_logs

    refuse_overwriting([args.out], args.logs)
    panels = plot_logs(args.logs, args.out, keys=args.keys)
    print(f"wrote {args.out} ({'; '.join(panels)})")


def add_browse_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--out", required=True, help="folder for the PNGs")
    p.add_argument("--num", type=int, default=8, help="how many images (from the first)")
    p.add_argument("--split", default="train", help="data.<split> to read (default: train)")


def cmd_browse(args: argparse.Namespace) -> None:
    from detzoo.tools.browse import browse

    written = browse(_config(args), out=args.out, split=args.split, num=args.num)
    print(f"wrote {len(written)} images to {args.out}")


def add_analyze_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", metavar="RESULTS.json", help="COCO results, as `detzoo test --out` writes")
    p.add_argument("--ann", required=True, help="the COCO annotation json they were made on")
    p.add_argument("--out", required=True, help="folder; tables and plots go to <out>/<type>/")
    p.add_argument("--type", default="bbox", choices=["bbox", "segm"])


def cmd_analyze(args: argparse.Namespace) -> None:
    from detzoo.tools.analyze import analyze

    analysis = analyze(args.results, ann_file=args.ann, out_dir=args.out, iou_type=args.type)
    print(analysis.markdown())
    print(f"wrote {len(analysis.files)} files to {Path(args.out) / args.type}")


def commands() -> tuple[Command | Group, ...]:
    """The commands, in the order ``detzoo --help`` lists them; made when the parser is, of
    this module's functions as they are then."""
    return (
        Command("train", "train a config", add_train_arguments, cmd_train),
        Command("test", "evaluate a checkpoint on data.val", add_test_arguments, cmd_test),
        Command("infer", "draw predictions on images", add_infer_arguments, cmd_infer),
        Command("convert", "convert another toolbox's checkpoint", add_convert_arguments, cmd_convert),
        Group("export", "export a model for deployment", (
            Command("onnx", "ONNX graph of one image (dynamic size), NMS and RoIAlign inside",
                    add_export_onnx_arguments, cmd_export_onnx),
        )),
        Command("publish", "strip a checkpoint to model + meta, written as <name>-<sha256[:8]>.pth",
                add_publish_arguments, cmd_publish),
        Command("verify", "check a file against the sha256 prefix in its name", add_verify_arguments, cmd_verify),
        Group("data", "datasets", (
            Command("synth", "write a synthetic COCO-format dataset of shapes", add_synth_arguments, cmd_synth),
        )),
        Command("plot", "loss, lr and evaluation curves of training logs (log.jsonl) to PNG",
                add_plot_arguments, cmd_plot),
        Command("browse", "ground truth drawn on images after the training transforms, to PNG",
                add_browse_arguments, cmd_browse),
        Command("analyze", "per-category AP and COCO error breakdown plots of a results json",
                add_analyze_arguments, cmd_analyze),
        Command("benchmark", "inference and training speed, memory, FLOPs and parameters of a config",
                add_benchmark_arguments, cmd_benchmark),
        Group("zoo", "the model zoo's metafiles", (
            Command("list", "one line per model: collection, reference AP, published weights",
                    add_zoo_list_arguments, cmd_zoo_list),
            Command("show", "everything the metafiles hold about one model", add_zoo_show_arguments, cmd_zoo_show),
            Command("table", "write the generated model-zoo tables (markdown)", add_zoo_table_arguments, cmd_zoo_table),
            Command("record", "append a measured run (detzoo benchmark --json) to its model's metafile",
                    add_zoo_record_arguments, cmd_zoo_record),
        )),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="detzoo", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {detzoo.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in commands():
        command.add_to(sub)
    return parser


_WORKER_TRACEBACK = "\nOriginal Traceback (most recent call last):\n"  # torch's text for a DataLoader worker's error


def user_error_message(error: BaseException) -> str | None:
    """The one line a command shows for ``error`` when bad input caused it, else None (a
    bug, whose traceback is shown). Bad input is a ``UserError``, raised by the check that
    found it (``detzoo.errors``), or an ``OSError`` in which the operating system names a
    file (permissions, a folder where a file should be). An error in a DataLoader worker,
    which torch re-raises with the worker's traceback in its message, is shown as the
    worker's own message."""
    if not (isinstance(error, UserError) or isinstance(error, OSError) and error.filename is not None):
        return None
    text = str(error)
    _, worker, worker_traceback = text.partition(_WORKER_TRACEBACK)
    if worker:  # the last line is "module.Class: message"
        text = worker_traceback.rstrip().splitlines()[-1].split(": ", 1)[-1]
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def entry_point() -> int:
    """The ``detzoo`` command (and ``python -m detzoo``): ``main`` of the command line, in a
    process that keeps the memory it frees for reuse (``detzoo.allocator``; ``main`` called
    from Python leaves its caller's allocator alone)."""
    retain_freed_memory()
    return main()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.command_line = shlex.join(["detzoo", *argv])
    if getattr(args, "amp", None) is not None:  # --amp: the shorthand of --set runtime.amp=..., after the --set's
        args.set.append(f"runtime.amp={args.amp!r}")
    try:
        args.fn(args)
    except KeyboardInterrupt as e:  # Ctrl-C: one line (training says what it left and how to resume)
        _close_progress_bars()
        print(f"detzoo {args.command}: {e or 'interrupted'}", file=sys.stderr)
        return 130
    except Exception as e:
        message = user_error_message(e)
        if message is None:
            raise  # a bug: its traceback
        _close_progress_bars()
        print(f"detzoo {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


def _close_progress_bars() -> None:
    """End the lines of the progress bars an error or Ctrl-C cut short, so its line is its own."""
    for bar in list(tqdm._instances):
        bar.close()


if __name__ == "__main__":
    sys.exit(main())
