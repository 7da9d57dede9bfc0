"""Text views of the model zoo: ``detzoo zoo list`` lines, ``detzoo zoo show`` and the
generated ``docs/model_zoo.md`` (``detzoo zoo table``).

Every view keeps the two kinds of numbers apart: reference numbers (published by the source
each names) and numbers detzoo measured itself (each labelled with its device). The
markdown depends on nothing but the metafiles and the output folder (for relative links),
so the same zoo always gives the same bytes.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from detzoo.backbones.imagenet import WEIGHTS
from detzoo.config import load_config
from detzoo.evaluation.types import BBOX, KEYPOINTS, PROPOSALS, SEGM
from detzoo.files import atomic_write
from detzoo.zoo.metafile import MEMORY_KINDS, MeasuredRun, Reference, Zoo, ZooError, ZooModel

# metafile metric -> (list / table column, measured metrics kind and key)
_METRICS = {
    "box AP": ("box AP", (BBOX, "AP")),
    "mask AP": ("mask AP", (SEGM, "AP")),
    "kp AP": ("kp AP", (KEYPOINTS, "AP")),
    "AR@1000": ("AR1000", (PROPOSALS, "AR@1000")),
}
_MISSING = "-"
_REFERENCE_LABELS = ("Mem (GB)", "train s/iter", "Inf time")


def select(zoo: Zoo, family: str | None = None) -> list[ZooModel]:
    """The zoo's models, or those of collection ``family`` (case, spaces and punctuation ignored)."""
    if family is None:
        return list(zoo.models.values())
    matches = [name for name in zoo.collections if _key(name) == _key(family)]
    if not matches:
        raise ZooError(f"no model family {family!r}; families: {', '.join(zoo.collections)}")
    return [m for m in zoo.models.values() if m.collection == matches[0]]


def list_lines(models: Sequence[ZooModel]) -> str:
    """One line per model: name, collection, the first reference's metrics, weights format."""
    header = ["name", "collection", *(column for column, _ in _METRICS.values()), "weights"]
    rows = [[m.name, m.collection,
             *(_number(m.references[0].metric(metric)) if m.references else _MISSING for metric in _METRICS),
             m.weights.format if m.weights else _MISSING] for m in models]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows])


def _init_line(config: Path) -> str:
    """Where the config's backbone starts training: its ImageNet weights and their file."""
    init = load_config(config)["model"]["backbone"].get("init")
    if init is None:
        return "none (the backbone is trained from scratch)"
    weights = WEIGHTS.get(init)
    if weights is None:
        return f"{init} (a local file)"
    return f"{init}: {weights.url} ({weights.check}, {weights.layout} layout, {weights.source})"


def describe(zoo: Zoo, model: ZooModel) -> str:
    """Everything the metafiles hold about ``model``, reference and measured apart."""
    collection = zoo.collections[model.collection]
    schedule = f"{model.epochs} epochs" if model.epochs is not None else f"{model.iterations} iterations"
    lines = [
        model.name,
        f"  collection: {collection.name} ({collection.paper_title}, {collection.paper_url})",
        f"  config:     {model.config}",
        f"  metafile:   {model.metafile}",
        f"  backbone:   {model.backbone}, {model.style} style, lr schd {model.lr_schd} ({schedule})",
        "  init:       " + _init_line(model.config),
        "  weights:    " + (f"{model.weights.url} ({model.weights.check}, format {model.weights.format})"
                            if model.weights else "none listed"),
        "reference (published by the source named, not measured by detzoo):",
    ]
    for ref in model.references:
        lines.append(f"  - {ref.source}")
        figures = [f"{label} {value}" for label, value in
                   [("images/GPU", _number(ref.images_per_gpu)), *_reference_figures(ref)] if value != _MISSING]
        if figures:
            lines.append("    " + ", ".join(figures))
        lines += [f"    {r.task}, {r.dataset}: " + ", ".join(f"{k} {_number(v)}" for k, v in r.metrics.items())
                  for r in ref.results]
        if ref.note:
            lines.append(f"    note: {ref.note}")
    if not model.references:
        lines.append("  none")
    lines.append("measured by detzoo:")
    for run in model.measured:
        record = {k: v for k, v in dataclasses.asdict(run).items() if v is not None}
        text = yaml.safe_dump(record, sort_keys=False, width=1000).rstrip().splitlines()
        lines += ["  - " + text[0], *("    " + line for line in text[1:])]
    if not model.measured:
        lines.append("  none recorded")
    return "\n".join(lines)


def render_markdown(zoo: Zoo, out_dir: str | Path) -> str:
    """``docs/model_zoo.md``: per collection, one table row per model; links relative to ``out_dir``."""
    out = [
        "# Model zoo",
        "",
        "<!-- Generated by `detzoo zoo table` from detzoo/configs/model-index.yml and the metafiles it imports. "
        "Do not edit: edit the metafiles and regenerate. -->",
        "",
        "Generated by `detzoo zoo table --out docs/model_zoo.md` from `detzoo/configs/model-index.yml` and the "
        "`metafile.yml` files it imports "
        f"(layout: [detzoo/configs/README.md]({_link(zoo.root / 'README.md', out_dir)}), \"Metafiles\"); "
        "`tests/test_zoo.py` fails when this file differs from a fresh generation.",
        "",
        "Two kinds of numbers, never mixed:",
        "",
        "- **Reference columns** (Mem (GB) to AR1000, and *reference source*): numbers published by the source "
        "each row names, on that source's hardware; detzoo did not measure them. `seeds/NNN` names the "
        "model-zoo page the number was taken from (Detectron's and mmdetection's model zoos); the line under "
        "each table says which. Inference time keeps the unit of its source: fps, or Detectron's s/im, whose "
        "\"X + Y\" is model time + post-processing time. Rows with several sources list one value per source, "
        "in the order of the *reference source* cell.",
        "- **Measured columns** (headed *measured*): numbers detzoo measured itself (`detzoo benchmark --json`, "
        "evaluations), recorded in the metafiles with `detzoo zoo record`; each value names its device "
        "(`CPU, N thr` on a CPU). `detzoo zoo show NAME` prints each run's command and environment.",
        "",
    ]
    for collection in zoo.collections.values():
        models = [m for m in zoo.models.values() if m.collection == collection.name]
        out += [f"## {collection.name}", "",
                f"[{collection.paper_title}]({collection.paper_url}). Training data: {collection.training_data}. "
                f"Training resources: {collection.training_resources}.", ""]
        out += _table(models, Path(out_dir))
        measured = any(m.measured for m in models)
        out += ["", f"Reference sources: {collection.readme}. "
                + ("Measured columns: detzoo's own runs." if measured
                   else "Measured by detzoo: none recorded yet."), ""]
    return "\n".join(out)


def write_markdown(zoo: Zoo, out: str | Path) -> None:
    """Write ``render_markdown`` to ``out`` (atomically)."""
    out = Path(out)
    text = render_markdown(zoo, out.parent)
    with atomic_write(out, text=True) as f:
        f.write(text)


def _table(models: Sequence[ZooModel], out_dir: Path) -> list[str]:
    columns: list[tuple[str, Callable[[ZooModel], str], bool]] = [  # header, cell, kept when empty
        ("backbone", lambda m: m.backbone, True),
        ("style", lambda m: m.style, True),
        ("lr schd", lambda m: m.lr_schd, True),
        *((label, _stacked(i), False) for i, label in enumerate(_REFERENCE_LABELS)),
        *((column, _stacked_metric(metric), False) for metric, (column, _) in _METRICS.items()),
        ("reference source", lambda m: "<br>".join(r.source for r in m.references) or _MISSING, False),
        *((f"measured {label}", _measured(fn), False) for label, fn in _MEASURED),
        ("config", lambda m: f"[{m.name}]({_link(m.config, out_dir)})", True),
        ("download", lambda m: f"[{m.weights.format}]({m.weights.url})" if m.weights else _MISSING, True),
    ]
    cells = [[cell(m) for _, cell, _ in columns] for m in models]
    keep = [i for i, (_, _, always) in enumerate(columns) if always or any(row[i] != _MISSING for row in cells)]
    rows = [[columns[i][0] for i in keep], ["---"] * len(keep), *([row[i] for i in keep] for row in cells)]
    return ["| " + " | ".join(row) + " |" for row in rows]



def _reference_figures(ref: Reference) -> list[tuple[str, str]]:
    if ref.inference_s_im is not None:
        inference = f"{ref.inference_s_im} s/im"
    elif ref.inference_fps is not None:
        inference = f"{_number(ref.inference_fps)} fps"
    else:
        inference = _MISSING
    return [("Mem (GB)", _number(ref.memory_gb)), ("train s/iter", _number(ref.train_s_iter)),
            ("Inf time", inference)]


def _stacked(index: int) -> Callable[[ZooModel], str]:
    return lambda m: _stack([_reference_figures(r)[index][1] for r in m.references])


def _stacked_metric(metric: str) -> Callable[[ZooModel], str]:
    """The metric per reference, naming the dataset where it is not all of COCO (``COCO person``)."""
    def cell(model: ZooModel) -> str:
        values = []
        for ref in model.references:
            result = next((r for r in ref.results if metric in r.metrics), None)
            values.append(_MISSING if result is None else _number(result.metrics[metric])
                          + ("" if result.dataset == "COCO" else f" ({result.dataset})"))
        return _stack(values)
    return cell


def _stack(values: Sequence[str]) -> str:
    """One value per reference, or ``-`` when no reference has one."""
    return "<br>".join(values) if any(v != _MISSING for v in values) else _MISSING


def _measured(fn: Callable[[MeasuredRun], str | None]) -> Callable[[ZooModel], str]:
    return lambda m: "<br>".join(v for v in map(fn, m.measured) if v is not None) or _MISSING


def _memory(run: MeasuredRun) -> str | None:
    t = run.train
    if t is None:
        return None
    return f"{t['peak_memory_gb']:.2f} ({run.device_label}, {MEMORY_KINDS[t['memory_kind']]})"


def _s_iter(run: MeasuredRun) -> str | None:
    t = run.train
    return f"{t['s_iter']:.3f} ({run.device_label}, batch {t['batch_size']})" if t else None


def _inference(run: MeasuredRun) -> str | None:
    i = run.inference
    return (f"{i['fps']:.2f} fps, {i['model_s']:.3f} + {i['postprocess_s']:.3f} s/im ({run.device_label})"
            if i else None)


def _complexity(run: MeasuredRun) -> str | None:
    c = run.complexity
    return f"{c['gflops']:.1f} / {c['params_m']:.1f} (input {c['input_shape'][1]}x{c['input_shape'][2]})" if c else None


def _measured_metric(kind: str, key: str) -> Callable[[MeasuredRun], str | None]:
    def cell(run: MeasuredRun) -> str | None:
        value = (run.metrics or {}).get(kind, {}).get(key)
        return None if value is None else f"{100 * value:.1f} ({run.device_label})"
    return cell


_MEASURED = (
    ("Mem (GB)", _memory),
    ("train s/iter", _s_iter),
    ("Inf time", _inference),
    ("GFLOPs / params (M)", _complexity),
    *((column, _measured_metric(kind, key)) for column, (kind, key) in _METRICS.values()),
)


def _link(path: Path, out_dir: str | Path) -> str:
    return Path(os.path.relpath(path, out_dir)).as_posix()


def _number(value: float | None) -> str:
    return _MISSING if value is None else str(value)


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())
