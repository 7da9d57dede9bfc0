"""``detzoo plot``: training curves (losses, learning rate, evaluation metrics against
iteration) from the trainer's ``log.jsonl``, several runs overlaid, to one PNG.

A log holds one JSON object per line: training records (``iter``, ``lr``, ``loss`` and its
terms ``loss_*``, timings) every ``runtime.log_interval`` iterations, and evaluation records
(``iter``, ``eval``: {type: {metric: fraction}}). A panel shows one or more series named by
``keys``: a training record's field (``loss``, ``loss_cls``, ``lr``, ``time``) or an
evaluation metric as ``TYPE.METRIC`` (``bbox.AP``, ``segm.AP50``, ``proposals.AR@100``),
drawn in percent; ``"loss,loss_cls"`` puts two series in one panel.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any, Sequence

from detzoo.errors import DataError, InputError

LINESTYLES = ("-", "--", ":", "-.")
MAX_COLUMNS = 4
EVAL_SERIES_PER_TYPE = 2  # default panels: the first two metrics of each type (AP, AP50 / AR@100, AR@300)


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``log.jsonl``; a DataError naming the file and line for a line
    that is not a JSON object with an ``iter``."""
    path = Path(path)
    try:
        text = path.read_bytes().decode()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a text log (not UTF-8 at byte {e.start})") from None
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}, line {number}: not JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(record, dict) or not isinstance(record.get("iter"), int):
            raise DataError(f"{path}, line {number}: expected a JSON object with an integer 'iter', got {line[:80]!r}")
        records.append(record)
    if not records:
        raise DataError(f"{path}: no records")
    return records


def series(records: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """Iterations and values of one series (evaluation metrics as fractions)."""
    points = []
    kind, dot, metric = key.partition(".")
    for r in records:
        if dot:  # COCOeval's -1 (no ground truth in that range) is no value
            value = r["eval"].get(kind, {}).get(metric, -1) if "eval" in r else -1
            value = value if isinstance(value, (int, float)) and value >= 0 else None
        else:
            value = r.get(key) if "eval" not in r else None
        if isinstance(value, (int, float)):
            points.append((r["iter"], float(value)))
    return [p[0] for p in points], [p[1] for p in points]


def default_panels(logs: Sequence[Sequence[dict[str, Any]]]) -> list[str]:
    """The total loss and its terms (one panel for one log, a panel each to compare
    several), the learning rate, and per evaluation type its first metrics."""
    terms, evals = [], {}
    for records in logs:
        for r in records:
            if "eval" in r:
                for kind, metrics in r["eval"].items():
                    evals.setdefault(kind, list(metrics)[:EVAL_SERIES_PER_TYPE])
            else:
                terms += [key for key in r if key.startswith("loss_") and key not in terms]
    losses = [",".join(["loss", *terms])] if len(logs) == 1 else ["loss", *terms]
    panels = [*losses, "lr", *(",".join(f"{kind}.{m}" for m in metrics) for kind, metrics in evals.items())]
    return [p for p in panels if any(series(records, p.split(",")[0])[0] for records in logs)]


def plot_logs(
    paths: Sequence[str | Path], out: str | Path, *, keys: Sequence[str] | None = None
) -> list[str]:
    """Draw the panels ``keys`` (default: ``default_panels``) of the logs at ``paths``, up
    to ``MAX_COLUMNS`` in a row, and save them to ``out``; returns the panels drawn. One
    log: a colour per series; several: a colour per log (named by its folder), a line
    style per series. A series that no log has is an InputError listing those they have."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not paths:
        raise ValueError("no log given")
    logs = [read_log(p) for p in paths]
    names = [Path(p).parent.name or Path(p).stem for p in paths]
    if len(set(names)) < len(names):
        names = [str(p) for p in paths]
    panels = list(keys) if keys else default_panels(logs)
    for key in (k for panel in panels for k in panel.split(",")):
        if not any(series(records, key)[0] for records in logs):
            raise InputError(f"no log has {key!r}; they have: {', '.join(_available(logs))}")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    columns = min(len(panels), MAX_COLUMNS)
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 3.8 * rows), squeeze=False)
    last = max(r["iter"] for records in logs for r in records)
    for ax in axes.flat[len(panels) :]:
        ax.set_axis_off()
    for ax, panel in zip(axes.flat, panels):
        keys_here = panel.split(",")
        for j, (name, records) in enumerate(zip(names, logs)):
            for k, key in enumerate(keys_here):
                iters, values = series(records, key)
                if not iters:
                    continue
                if len(logs) == 1:
                    color, style, label = colors[k % len(colors)], "-", key
                else:
                    color, style = colors[j % len(colors)], LINESTYLES[k % len(LINESTYLES)]
                    label = name if len(keys_here) == 1 else f"{name}: {key}"
                percent = "." in key
                ax.plot(iters, [100 * v for v in values] if percent else values, style, color=color,
                        marker="o" if percent else None, markersize=3, label=label)
        ax.set(xlabel="iteration", xlim=(0, 1.03 * last), title=textwrap.fill(", ".join(keys_here), 60))
        if all("." in k for k in keys_here):
            ax.set(ylabel="%", ylim=(0, 100))
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return panels


def _available(logs: Sequence[Sequence[dict[str, Any]]]) -> list[str]:
    keys: list[str] = []
    for records in logs:
        for r in records:
            found = [f"{t}.{m}" for t, ms in r["eval"].items() for m in ms] if "eval" in r else list(r)
            keys += [k for k in found if k not in keys and k != "iter"]
    return keys
