"""The model zoo's metadata: ``detzoo/configs/model-index.yml`` and the ``metafile.yml`` files it imports.

The layout is mmdetection's (``Collections`` with paper and training metadata, ``Models``
with name, collection, config, metadata and weights), with one change that the zoo needs:
what others published and what detzoo measured never share a field.

* ``Reference``: a list, one entry per published row (Detectron's or mmdetection's model zoo,
  torchvision's weights metadata), each naming its ``Source``; its ``Metadata`` holds the
  row's memory, speed and images per GPU, its ``Results`` the row's metrics.
* ``Measured``: a list of records of detzoo's own runs (``detzoo benchmark --json`` output or
  evaluation metrics), each with date, command and environment, appended by
  ``detzoo zoo record`` (``record_run``). A config detzoo never ran has none.

Paths in the index and in ``Config`` are relative to the configs root (the index's folder).
Files are read with ``yaml.safe_load`` and validated as a whole: any fault is one
``ZooError`` naming the file and the model. ``record_run`` rewrites a metafile in the one
form ``dump_metafile`` writes, so metafiles are kept in that form (a test checks it).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from detzoo.config import ConfigError, check_keys, config_root
from detzoo.download import hash_in_name
from detzoo.engine.inference import AMP_DTYPES
from detzoo.evaluation.types import EVAL_TYPES
from detzoo.files import atomic_write
from detzoo.errors import UserError
from detzoo.zoo.converters import CONVERTERS

INDEX_NAME = "model-index.yml"
TASKS = ("Object Detection", "Instance Segmentation", "Keypoint Detection")
METRICS = ("box AP", "mask AP", "kp AP", "AR@1000")
MEMORY_KINDS = {"cuda_max_allocated": "CUDA max allocated", "peak_rss": "peak RSS"}  # a run's train.memory_kind
# torch.hub's and mmdetection's file names end in the first 8 hex digits of the file's sha256
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_S_PER_IMAGE = re.compile(r"\d+(\.\d+)?( \+ \d+(\.\d+)?)?")  # Detectron's "X + Y" or one number
HEADER = (
    "# detzoo model-zoo metafile (layout: detzoo/configs/README.md, \"Metafiles\"). Kept in the form that\n"
    "# detzoo.zoo.metafile.dump_metafile writes, as `detzoo zoo record` rewrites it (tests/test_zoo.py).\n"
)


class ZooError(UserError, ValueError):
    """A model index, metafile or run record is invalid, or a model name is unknown."""


@dataclass(frozen=True)
class Weights:
    """A published checkpoint: its URL, the converter it needs, and one integrity check.

    ``sha256``: the 8 hex digits that end the file name (torch.hub's and mmdetection's
    ``<name>-<sha256[:8]>.pth``). ``md5``: the URL of a file holding the file's md5 (Detectron
    publishes it at ``<URL>.md5sum`` and names every file ``model_final.pkl``); it comes from
    the same server as the file, so it catches a corrupt or truncated download, not a server
    that serves other bytes under both names.
    """

    url: str
    format: str
    sha256: str | None = None
    md5: str | None = None

    @property
    def check(self) -> str:
        """How the file is checked, for people: ``sha256 258fb6c6...`` or ``md5 from <URL>``."""
        return f"sha256 {self.sha256}..." if self.sha256 is not None else f"md5 from {self.md5}"


@dataclass(frozen=True)
class Result:
    """Metrics of one task on one dataset (``COCO``, or ``COCO person`` for person-only rows)."""

    task: str
    dataset: str
    metrics: dict[str, float]


@dataclass(frozen=True)
class Reference:
    """One published row: numbers detzoo did not measure, with their source."""

    source: str
    results: tuple[Result, ...]
    images_per_gpu: int | None
    memory_gb: float | None
    train_s_iter: float | None
    inference_fps: float | None
    inference_s_im: str | None  # as the source writes it: "0.125", or Detectron's "0.093 + 0.004"
    note: str | None

    def metric(self, name: str) -> float | None:
        return next((r.metrics[name] for r in self.results if name in r.metrics), None)


@dataclass(frozen=True)
class Collection:
    """A model family: its paper and how its reference rows were trained."""

    name: str
    paper_title: str
    paper_url: str
    training_data: str
    training_techniques: tuple[str, ...]
    training_resources: str
    architecture: tuple[str, ...]
    readme: str
    metafile: Path


@dataclass(frozen=True)
class ZooModel:
    """One config of the zoo: what it is, what others published for it, what detzoo measured."""

    name: str
    collection: str
    config: Path
    metafile: Path
    backbone: str
    style: str
    lr_schd: str
    epochs: int | None
    iterations: int | None
    references: tuple[Reference, ...]
    weights: Weights | None
    measured: tuple[MeasuredRun, ...]


@dataclass(frozen=True)
class Zoo:
    """The validated model index under ``root``."""

    root: Path
    collections: dict[str, Collection]  # in index order
    models: dict[str, ZooModel]  # in index order

    def find(self, name: str) -> ZooModel:
        """The model called ``name``; an unknown name is an error suggesting close ones."""
        if name in self.models:
            return self.models[name]
        close = difflib.get_close_matches(name, list(self.models), n=3)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ZooError(f"no model named {name!r} in {self.root / INDEX_NAME}{hint}")


def load_zoo(root: str | Path | None = None) -> Zoo:
    """Read and validate the model index under ``root`` (default: ``config_root()``) and its metafiles."""
    root = Path(root) if root is not None else config_root()
    return _build_zoo(root, {path: _read_yaml(path) for path in _index(root)})


def find_model(name: str, root: str | Path | None = None) -> ZooModel:
    """The zoo model called ``name`` (its weights: ``find_model(name).weights``)."""
    return load_zoo(root).find(name)


def dump_metafile(data: Mapping) -> str:
    """The text of a metafile holding ``data``: the fixed header, then block-style YAML in key order."""
    return HEADER + yaml.dump(dict(data), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1000)


def run_record(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` as a run record: plain JSON data (tuples as lists), keys in ``MeasuredRun``'s
    order, checked against it (a ``ZooError``). What ``detzoo benchmark --json`` writes, also
    when it holds no figures (a conv peak alone), which the zoo does not file."""
    record = json.loads(json.dumps(values))
    _check_run("run record", "", record, figures=False)
    return {f.name: record[f.name] for f in fields(MeasuredRun) if f.name in record}


def read_run(path: str | Path) -> dict:
    """A run record from a JSON file (``detzoo benchmark --json``), validated."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except OSError as e:
        raise ZooError(f"cannot read run record {path}: {e}") from e
    except json.JSONDecodeError as e:
        raise ZooError(f"{path}: not valid JSON: {e}") from e
    _check_run(str(path), "", record)
    return record


def record_run(record: Mapping, *, name: str | None = None, root: str | Path | None = None) -> ZooModel:
    """Append run ``record`` to the ``Measured`` list of model ``name`` (default: the stem of the
    record's ``config``) in its metafile, which is rewritten; returns the updated model."""
    root = Path(root) if root is not None else config_root()
    _check_run("run record", "", record)
    raws = {path: _read_yaml(path) for path in _index(root)}
    model = _build_zoo(root, raws).find(name or Path(record["config"]).stem)
    entry = next(m for m in raws[model.metafile]["Models"] if m["Name"] == model.name)
    entry.setdefault("Measured", []).append(run_record(record))
    updated = _build_zoo(root, raws)  # validate the whole zoo before writing
    with atomic_write(model.metafile, text=True) as f:
        f.write(dump_metafile(raws[model.metafile]))
    return updated.models[model.name]


class _Dumper(yaml.SafeDumper):
    """SafeDumper that indents block sequences under their key, as mmdetection's metafiles do,
    and writes repeated values out instead of as anchors and aliases."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        return super().increase_indent(flow, False)

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except OSError as e:
        raise ZooError(f"cannot read {path}: {e}") from e
    except yaml.YAMLError as e:
        raise ZooError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from e


def _index(root: Path) -> list[Path]:
    index = root / INDEX_NAME
    raw = _read_yaml(index)
    where = str(index)
    _keys(where, "", raw, required=("Import",))
    out = []
    for item in _typed(where, "Import", raw["Import"], list):
        path = (root / _typed(where, "Import item", item, str)).resolve()
        if not path.is_file():
            raise ZooError(f"{where}: imported metafile {item!r} not found (looked for {path})")
        if path in out:
            raise ZooError(f"{where}: metafile {item!r} is imported twice")
        out.append(path)
    return out


def _build_zoo(root: Path, raws: Mapping[Path, Any]) -> Zoo:
    collections: dict[str, Collection] = {}
    entries: list[tuple[Path, Any]] = []
    for path, raw in raws.items():
        _keys(str(path), "", raw, required=(), optional=("Collections", "Models"))
        for item in _typed(str(path), "Collections", raw.get("Collections", []), list):
            collection = _collection(path, item)
            if collection.name in collections:
                raise ZooError(f"{path}: collection {collection.name!r} is already defined in "
                               f"{collections[collection.name].metafile}")
            collections[collection.name] = collection
        entries += [(path, item) for item in _typed(str(path), "Models", raw.get("Models", []), list)]
    models: dict[str, ZooModel] = {}
    for path, item in entries:
        model = _model(root, path, item, collections)
        if model.name in models:
            raise ZooError(f"{path}: model {model.name!r} is already listed in {models[model.name].metafile}")
        models[model.name] = model
    return Zoo(root=root, collections=collections, models=models)


def _collection(path: Path, raw: Any) -> Collection:
    where = f"{path}: collection {_name(raw)!r}"
    _keys(where, "", raw, required=("Name", "Paper", "Metadata", "README"))
    _keys(where, "Paper", raw["Paper"], required=("Title", "URL"))
    meta = raw["Metadata"]
    _keys(where, "Metadata", meta,
          required=("Training Data", "Training Techniques", "Training Resources", "Architecture"))
    return Collection(
        name=_typed(where, "Name", raw["Name"], str),
        paper_title=_typed(where, "Paper.Title", raw["Paper"]["Title"], str),
        paper_url=_typed(where, "Paper.URL", raw["Paper"]["URL"], str),
        training_data=_typed(where, "Metadata.Training Data", meta["Training Data"], str),
        training_techniques=_strings(where, "Metadata.Training Techniques", meta["Training Techniques"]),
        training_resources=_typed(where, "Metadata.Training Resources", meta["Training Resources"], str),
        architecture=_strings(where, "Metadata.Architecture", meta["Architecture"]),
        readme=_typed(where, "README", raw["README"], str),
        metafile=path,
    )


def _model(root: Path, path: Path, raw: Any, collections: Mapping[str, Collection]) -> ZooModel:
    where = f"{path}: model {_name(raw)!r}"
    _keys(where, "", raw, required=("Name", "In Collection", "Config", "Metadata"),
          optional=("Reference", "Weights", "Measured"))
    name = _typed(where, "Name", raw["Name"], str)
    config = _typed(where, "Config", raw["Config"], str)
    if Path(config).stem != name:
        raise ZooError(f"{where}: Name must be the stem of its Config {config!r}")
    if not (root / config).is_file():
        raise ZooError(f"{where}: config {config!r} not found (looked for {root / config})")
    collection = _typed(where, "In Collection", raw["In Collection"], str)
    if collection not in collections:
        close = difflib.get_close_matches(collection, list(collections), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ZooError(f"{where}: In Collection {collection!r} is not a collection of the zoo{hint}")
    meta = raw["Metadata"]
    _keys(where, "Metadata", meta, required=("Backbone", "Style", "Lr schd"), optional=("Epochs", "Iterations"))
    if ("Epochs" in meta) == ("Iterations" in meta):
        raise ZooError(f"{where}: Metadata needs exactly one of 'Epochs' and 'Iterations'")
    references = _typed(where, "Reference", raw.get("Reference", []), list)
    measured = _typed(where, "Measured", raw.get("Measured", []), list)
    return ZooModel(
        name=name,
        collection=collection,
        config=(root / config).resolve(),
        metafile=path,
        backbone=_typed(where, "Metadata.Backbone", meta["Backbone"], str),
        style=_typed(where, "Metadata.Style", meta["Style"], str),
        lr_schd=_typed(where, "Metadata.Lr schd", meta["Lr schd"], str),
        epochs=_optional(where, "Metadata", meta, "Epochs", int),
        iterations=_optional(where, "Metadata", meta, "Iterations", int),
        references=tuple(_reference(where, f"Reference[{i}]", item) for i, item in enumerate(references)),
        weights=_weights(where, raw["Weights"]) if "Weights" in raw else None,
        measured=tuple(_run(where, f"Measured[{i}]", item) for i, item in enumerate(measured)),
    )


def _reference(where: str, section: str, raw: Any) -> Reference:
    _keys(where, section, raw, required=("Source", "Results"), optional=("Metadata", "Note"))
    meta_section = f"{section}.Metadata"
    meta = raw.get("Metadata", {})
    _keys(where, meta_section, meta, required=(), optional=(
        "Images per GPU", "Training Memory (GB)", "Training Time (s/iter)", "Inference Time (fps)",
        "Inference Time (s/im)"))
    s_im = meta.get("Inference Time (s/im)")
    if s_im is not None and not _S_PER_IMAGE.fullmatch(str(s_im)):
        raise ZooError(f"{where}: {meta_section}.Inference Time (s/im): expected a number or 'X + Y', got {s_im!r}")
    results = _typed(where, f"{section}.Results", raw["Results"], list)
    if not results:
        raise ZooError(f"{where}: {section}.Results is empty")
    return Reference(
        source=_typed(where, f"{section}.Source", raw["Source"], str),
        results=tuple(_result(where, f"{section}.Results[{i}]", item) for i, item in enumerate(results)),
        images_per_gpu=_optional(where, meta_section, meta, "Images per GPU", int),
        memory_gb=_optional(where, meta_section, meta, "Training Memory (GB)", _number),
        train_s_iter=_optional(where, meta_section, meta, "Training Time (s/iter)", _number),
        inference_fps=_optional(where, meta_section, meta, "Inference Time (fps)", _number),
        inference_s_im=None if s_im is None else str(s_im),
        note=_optional(where, section, raw, "Note", str),
    )


def _result(where: str, section: str, raw: Any) -> Result:
    _keys(where, section, raw, required=("Task", "Dataset", "Metrics"))
    task = _typed(where, f"{section}.Task", raw["Task"], str)
    if task not in TASKS:
        raise ZooError(f"{where}: {section}.Task {task!r} is not one of {', '.join(TASKS)}")
    metrics = raw["Metrics"]
    _keys(where, f"{section}.Metrics", metrics, required=(), optional=METRICS)
    if not metrics:
        raise ZooError(f"{where}: {section}.Metrics is empty")
    return Result(task=task, dataset=_typed(where, f"{section}.Dataset", raw["Dataset"], str),
                  metrics={k: _typed(where, f"{section}.Metrics.{k}", v, _number) for k, v in metrics.items()})


def _weights(where: str, raw: Any) -> Weights:
    _keys(where, "Weights", raw, required=("URL", "Format"), optional=("SHA256", "MD5"))
    if ("SHA256" in raw) == ("MD5" in raw):
        raise ZooError(f"{where}: Weights needs exactly one of 'SHA256' and 'MD5'")
    url = _typed(where, "Weights.URL", raw["URL"], str)
    sha256 = _optional(where, "Weights", raw, "SHA256", str)
    md5 = _optional(where, "Weights", raw, "MD5", str)
    fmt = _typed(where, "Weights.Format", raw["Format"], str)
    if sha256 is not None and hash_in_name(url.rsplit("/", 1)[-1]) != sha256:
        raise ZooError(f"{where}: Weights.SHA256 {sha256!r} is not the 8 hex digits that end the URL's "
                       f"file name ('<name>-<sha256[:8]>.pth'): {url}")
    if md5 is not None and "://" not in md5:
        raise ZooError(f"{where}: Weights.MD5 {md5!r} is not the URL of a file holding the md5 (e.g. '<URL>.md5sum')")
    if fmt not in CONVERTERS:
        raise ZooError(f"{where}: Weights.Format {fmt!r} is not one of {', '.join(CONVERTERS)}")
    return Weights(url=url, format=fmt, sha256=sha256, md5=md5)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(value: Any) -> bool:
    return isinstance(value, str)


def _section(value: Any) -> bool:  # checked against its own schema in _check_run
    return value is None or isinstance(value, dict)


def _key(check: Callable[[Any], bool], *, required: bool = False, keys: Mapping | None = None) -> Any:
    """A key of a run record (a field of ``MeasuredRun``): the check of its value, and for a
    section its own keys, key -> (required, check). Keys without a default are required."""
    metadata = {"check": check, "keys": keys}
    return field(metadata=metadata) if required else field(default=None, metadata=metadata)


# the sections of a run record: key -> (required, check)
_LOADER = {
    "input": (True, _text), "batches": (True, _count), "warmup": (True, _count), "images": (True, _count),
    "num_workers": (True, _count), "images_per_s": (True, _number), "model_images_per_s": (True, _number),
    "ratio": (True, _number),
}
_ENVIRONMENT = {
    "device": (True, _text), "device_type": (True, lambda v: v in ("cpu", "cuda")), "threads": (True, _count),
    "torch": (True, _text), "torchvision": (True, _text),
    "processor": (False, _text), "detzoo": (False, _text), "python": (False, _text),
}
_INFERENCE = {
    "images": (True, _count), "warmup": (True, _count), "input": (True, _text), "fps": (True, _number),
    "model_s": (True, _number), "postprocess_s": (True, _number),
}
_TRAIN = {
    "iters": (True, _count), "warmup": (True, _count), "batch_size": (True, _count), "s_iter": (True, _number),
    "peak_memory_gb": (True, _number), "memory_kind": (True, lambda v: v in MEMORY_KINDS),
    "data_s": (False, _number),
    "stages": (False, lambda v: v is None or isinstance(v, dict) and all(map(_number, v.values()))),
}
_COMPLEXITY = {
    "gflops": (True, _number), "params_m": (True, _number),
    "input_shape": (True, lambda v: isinstance(v, list) and len(v) == 3 and all(map(_count, v))),
}


@dataclass(frozen=True, kw_only=True)
class MeasuredRun:
    """One run of detzoo itself, as ``detzoo benchmark --json`` (or an evaluation, with
    ``metrics``) recorded it. The schema of every run record, written (``run_record``),
    filed (``record_run``) and read: its fields are the record's keys, in the order
    written, each with its check (``_key``); ``metrics`` maps an evaluation type to its
    metrics."""

    config: str = _key(_text, required=True)
    checkpoint: str | None = _key(lambda v: v is None or isinstance(v, str))
    command: str = _key(_text, required=True)
    date: str = _key(lambda v: isinstance(v, str) and bool(_DATE.fullmatch(v)), required=True)
    environment: dict[str, Any] = _key(_section, required=True, keys=_ENVIRONMENT)
    amp: str | None = _key(lambda v: v is None or v in AMP_DTYPES)
    inference: dict[str, Any] | None = _key(_section, keys=_INFERENCE)
    train: dict[str, Any] | None = _key(_section, keys=_TRAIN)
    complexity: dict[str, Any] | None = _key(_section, keys=_COMPLEXITY)
    metrics: dict[str, dict[str, float]] | None = _key(_section)
    train_loader: dict[str, Any] | None = _key(_section, keys=_LOADER)
    test_loader: dict[str, Any] | None = _key(_section, keys=_LOADER)
    peak: dict[str, Any] | None = _key(_section)
    stages: dict[str, Any] | None = _key(_section)
    peak_share: dict[str, float] | None = _key(_section)

    @property
    def device_label(self) -> str:
        """``CPU, 2 thr`` on the CPU, else the device's name (e.g. the GPU model)."""
        env = self.environment
        return f"CPU, {env['threads']} thr" if env["device_type"] == "cpu" else str(env["device"])


_RUN = {f.name: (f.default is MISSING, f.metadata["check"]) for f in fields(MeasuredRun)}


def _check_fields(where: str, section: str, raw: Any, spec: Mapping[str, tuple[bool, Callable[[Any], bool]]]) -> None:
    _keys(where, section, raw, required=[k for k, (req, _) in spec.items() if req],
          optional=[k for k, (req, _) in spec.items() if not req])
    for key, value in raw.items():
        if not spec[key][1](value):
            raise ZooError(f"{where}: {_dotted(section, key)}: invalid value {value!r}")


def _check_run(where: str, section: str, raw: Any, *, figures: bool = True) -> None:
    """``raw`` is a run record; with ``figures``, one that the zoo files: it holds figures."""
    _check_fields(where, section, raw, _RUN)
    for f in fields(MeasuredRun):
        if f.metadata["keys"] is not None and raw.get(f.name) is not None:
            _check_fields(where, _dotted(section, f.name), raw[f.name], f.metadata["keys"])
    metrics = raw.get("metrics")
    if metrics is not None:
        _keys(where, _dotted(section, "metrics"), metrics, required=(), optional=EVAL_TYPES)
        for kind, values in metrics.items():
            if not isinstance(values, dict) or not values or not all(map(_number, values.values())):
                raise ZooError(f"{where}: {_dotted(section, 'metrics.' + kind)}: expected a non-empty "
                               "mapping of metric names to numbers")
    if figures and all(raw.get(k) is None for k in ("inference", "train", "complexity", "metrics")):
        raise ZooError(f"{where}: {section or 'the record'} holds no figures: "
                       "one of inference, train, complexity or metrics is needed")


def _run(where: str, section: str, raw: Any) -> MeasuredRun:
    _check_run(where, section, raw)
    return MeasuredRun(**raw)


def _name(raw: Any) -> Any:
    return raw.get("Name") if isinstance(raw, dict) else None


def _dotted(section: str, key: str) -> str:
    return f"{section}.{key}" if section else key


def _keys(where: str, section: str, raw: Any, *, required: Any, optional: Any = ()) -> None:
    """``raw`` is a mapping holding every ``required`` key and nothing outside ``required`` + ``optional``."""
    if not isinstance(raw, dict):
        raise ZooError(f"{where}: {section or 'the file'}: expected a mapping, got {type(raw).__name__}")
    try:
        check_keys(section, raw, [*required, *optional])
    except ConfigError as e:
        raise ZooError(f"{where}: {e}") from None
    missing = [_dotted(section, k) for k in required if k not in raw]
    if missing:
        raise ZooError(f"{where}: missing key(s) {', '.join(map(repr, missing))}")


def _typed(where: str, section: str, value: Any, kind: type | Callable[[Any], bool]) -> Any:
    if isinstance(kind, type):
        ok, expected = isinstance(value, kind) and not isinstance(value, bool), kind.__name__
    else:
        ok, expected = kind(value), "a number"
    if not ok:
        raise ZooError(f"{where}: {section}: expected {expected}, got {value!r}")
    return value


def _optional(where: str, section: str, raw: Mapping, key: str, kind: type | Callable[[Any], bool]) -> Any:
    return _typed(where, _dotted(section, key), raw[key], kind) if key in raw else None


def _strings(where: str, section: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ZooError(f"{where}: {section}: expected a non-empty list of strings, got {value!r}")
    return tuple(value)
