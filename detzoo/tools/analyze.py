"""``detzoo analyze``: per-category AP and the COCO error breakdown of a results file.

The breakdown is the one of the COCO detection evaluation's ``analyze`` function (as in
Detectron's and mmdetection's ``coco_error_analysis``): for each category, precision-recall
curves at 101 recall points (at most 100 detections per image, for each area range all /
small / medium / large), each removing one more kind of error:

- **C75**, **C50**: at IoU 0.75 and 0.5 (areas under them: AP75, AP50);
- **Loc**: at IoU 0.1, so localisation errors are forgiven (duplicates are not);
- **Sim**: as Loc, and a detection on an object of another category of the same
  supercategory is neither a true nor a false positive (those objects become ignored
  crowd objects of the category: COCOeval ignores crowds and lets many detections match
  one); a category alone in its supercategory has Sim = Loc;
- **Oth**: the same with the objects of every other category;
- **BG**: every remaining false positive (background) removed: 1 up to Oth's recall;
- **FN**: every missed object found too: 1.

The curves for all classes are the mean over the categories with ground truth in that area
range. COCOeval's matching (detzoo.evaluation.fast_coco); the tables give areas under the curves.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from pycocotools.coco import COCO

from detzoo.files import refuse_overwriting
from detzoo.data.coco import load_coco
from detzoo.errors import DataError
from detzoo.evaluation.coco import check_result_segmentations, coco_index, prepare_results, run_cocoeval
from detzoo.evaluation.types import BBOX, SEGM

ERROR_TYPES = ("C75", "C50", "Loc", "Sim", "Oth", "BG", "FN")
ERROR_COLORS = ("#1f3a93", "#3f7fbf", "#7fbfef", "#5fbf5f", "#efbf3f", "#ef7f3f", "#bf3f3f")
AREAS = ("all", "small", "medium", "large")  # COCOeval's default area ranges, in its order
AP_COLUMNS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
IOU_TYPES = (BBOX, SEGM)
ALL_CLASSES = "(all classes)"
# One COCOeval at COCO's IoU thresholds 0.5:0.95 (the AP table) and at 0.1 (Loc).
IOU_THRS = np.array([*np.linspace(0.5, 0.95, 10), 0.1])
_COCO_IOUS = list(range(10))
_AT = {iou: int(np.argmin(np.abs(IOU_THRS - iou))) for iou in (0.5, 0.75, 0.1)}


@dataclass
class Analysis:
    """Per-category AP (fractions; NaN where the category has no ground truth in that
    range) and, for all classes and per category, the areas under the breakdown curves
    over all areas; the files written."""

    iou_type: str
    class_names: list[str]
    per_category: dict[str, dict[str, float]]
    errors: dict[str, dict[str, float]]
    files: list[Path] = field(default_factory=list)

    def tables(self) -> dict[str, tuple[str, tuple[str, ...], list[list]]]:
        """Per table (file stem): its title, columns, rows of a name and fractions."""
        return {
            "per_category": (
                "AP per category (%)",
                AP_COLUMNS,
                [[name, *(self.per_category[name][c] for c in AP_COLUMNS)] for name in self.class_names],
            ),
            "errors": (
                "error breakdown: area under each PR curve (%), all areas",
                ERROR_TYPES,
                [[name, *(values[t] for t in ERROR_TYPES)] for name, values in self.errors.items()],
            ),
        }

    def markdown(self) -> str:
        return "\n\n".join(
            f"## {self.iou_type}: {title}\n\n{_markdown(['category', *columns], rows)}"
            for title, columns, rows in self.tables().values()
        ) + "\n"


def load_results(path: str | Path) -> list[dict]:
    """A COCO results json: a list of detections; a DataError naming the file otherwise."""
    try:
        results = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise DataError(f"{path}: expected a list of COCO result objects, as `detzoo test --out` writes")
    if not results:
        raise DataError(f"{path}: no detections to analyze")
    for i, r in enumerate(results):
        missing = [k for k in ("image_id", "category_id", "score") if k not in r]
        if missing:
            raise DataError(f"{path}: result {i} has no {', '.join(missing)}")
    return results


def per_category_ap(precision: np.ndarray, class_names: Sequence[str]) -> dict[str, dict[str, float]]:
    """AP, AP50, AP75 (all areas) and APs/APm/APl per category from COCOeval's accumulated
    ``precision[iou, recall, category, area, max_dets]`` at ``IOU_THRS`` and the last
    max-dets setting: the mean of the entries with ground truth (COCOeval's -1 left out)."""
    selections = {"AP": (_COCO_IOUS, 0), "AP50": ([_AT[0.5]], 0), "AP75": ([_AT[0.75]], 0),
                  "APs": (_COCO_IOUS, 1), "APm": (_COCO_IOUS, 2), "APl": (_COCO_IOUS, 3)}  # fmt: skip
    table = {}
    for k, name in enumerate(class_names):
        row = {}
        for column, (ious, area) in selections.items():
            p = precision[ious, :, k, area, -1]
            row[column] = float(p[p > -1].mean()) if (p > -1).any() else math.nan
        table[name] = row
    return table


def error_curves(coco_gt: COCO, results: list[dict], *, iou_type: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The breakdown curves ``[type, recall, category, area]`` (categories sorted by id,
    types as ``ERROR_TYPES``), which (category, area) pairs have ground truth, and the
    accumulated precision of one COCOeval at ``IOU_THRS``, for the AP table."""
    cat_ids = sorted(coco_gt.getCatIds())
    evaluated = run_cocoeval(
        coco_gt, prepare_results(coco_gt, results, iou_type=iou_type), iou_type=iou_type, iou_thrs=IOU_THRS
    )
    precision = evaluated.eval["precision"]
    curves = np.zeros((len(ERROR_TYPES), *precision.shape[1:4]))
    for i, iou in enumerate((0.75, 0.5, 0.1)):  # C75, C50, Loc
        curves[i] = precision[_AT[iou], ..., -1]
    has_gt = (curves[2] > -1).any(axis=0)
    supercategory = {c: coco_gt.cats[c].get("supercategory") for c in cat_ids}
    for k, cat_id in enumerate(cat_ids):
        own = [r for r in results if r["category_id"] == cat_id]
        siblings = {c for c in cat_ids if c != cat_id and supercategory[c] is not None
                    and supercategory[c] == supercategory[cat_id]}  # fmt: skip
        others = set(cat_ids) - {cat_id}
        for i, confused in ((3, siblings), (4, others)):
            if own and confused:
                gt = _as_ignored(coco_gt, cat_id, confused)
                prepared = prepare_results(gt, own, iou_type=iou_type)
                evaluated = run_cocoeval(gt, prepared, iou_type=iou_type, max_dets=[100], iou_thrs=[0.1])
                curves[i, :, k] = evaluated.eval["precision"][0, :, 0, :, 0]
            else:  # nothing to forgive: as Loc
                curves[i, :, k] = curves[2, :, k]
    curves[curves == -1] = 0
    curves[5] = curves[4] > 0
    curves[6] = 1
    return curves, has_gt, precision


def analyze(
    results_file: str | Path, *, ann_file: str | Path, out_dir: str | Path, iou_type: str = BBOX
) -> Analysis:
    """Per-category AP and the error breakdown of ``results_file`` against ``ann_file``,
    written to ``out_dir/<iou_type>/``: ``per_category.{csv,md}``, ``errors.{csv,md}``
    (areas under the curves, in %), ``pr_all_classes.png`` and ``pr_curves/<category>.png``
    (one panel per area range)."""
    if iou_type not in IOU_TYPES:
        raise ValueError(f"--type must be one of {', '.join(IOU_TYPES)}, got {iou_type!r}")
    coco_gt = load_coco(ann_file)
    if not coco_gt.anns:
        raise DataError(f"{ann_file}: no annotations to analyze against")
    results = load_results(results_file)
    try:
        check_result_segmentations(coco_gt, results)
        curves, has_gt, precision = error_curves(coco_gt, results, iou_type=iou_type)
    except DataError as e:
        raise DataError(f"{results_file}: {e}") from None
    cat_ids = sorted(coco_gt.getCatIds())
    names = [coco_gt.cats[c]["name"] for c in cat_ids]
    overall = _mean_over_categories(curves, has_gt)
    errors = {ALL_CLASSES: {t: float(overall[i, :, 0].mean()) for i, t in enumerate(ERROR_TYPES)}}
    errors.update({name: {t: float(curves[i, :, k, 0].mean()) if has_gt[k, 0] else math.nan
                          for i, t in enumerate(ERROR_TYPES)} for k, name in enumerate(names)})  # fmt: skip
    analysis = Analysis(iou_type, names, per_category_ap(precision, names), errors)

    out = Path(out_dir) / iou_type
    tables = [out / f"{stem}.{ext}" for stem in analysis.tables() for ext in ("csv", "md")]
    refuse_overwriting([*tables, out / "pr_all_classes.png"], [results_file, ann_file])
    (out / "pr_curves").mkdir(parents=True, exist_ok=True)
    for stem, (_, columns, rows) in analysis.tables().items():
        with open(out / f"{stem}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["category", *(f"{c} (%)" for c in columns)])
            writer.writerows([row[0], *("" if math.isnan(v) else f"{100 * v:.3f}" for v in row[1:])] for row in rows)
        (out / f"{stem}.md").write_text(_markdown(["category", *columns], rows) + "\n")
        analysis.files += [out / f"{stem}.csv", out / f"{stem}.md"]
    title = f"{iou_type}: {ALL_CLASSES}"
    analysis.files.append(_plot(overall, has_gt.any(axis=0), title, out / "pr_all_classes.png"))
    used: set[str] = set()
    for k, name in enumerate(names):
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
        stem = stem if stem not in used else f"{stem}_{cat_ids[k]}"
        used.add(stem)
        path = out / "pr_curves" / f"{stem}.png"
        analysis.files.append(_plot(curves[:, :, k], has_gt[k], f"{iou_type}: {name}", path))
    return analysis


def _as_ignored(coco_gt: COCO, cat_id: int, confused: set[int]) -> COCO:
    """Ground truth of category ``cat_id`` alone, with the objects of the ``confused``
    categories turned into ignored crowd objects of it (COCOeval's ignore flag follows
    ``iscrowd``)."""
    annotations = [
        ann if ann["category_id"] == cat_id else {**ann, "category_id": cat_id, "iscrowd": 1, "ignore": 1}
        for ann in coco_gt.dataset["annotations"]
        if ann["category_id"] == cat_id or ann["category_id"] in confused
    ]
    images = coco_gt.dataset["images"]
    return coco_index({"images": images, "categories": [coco_gt.cats[cat_id]], "annotations": annotations})


def _mean_over_categories(curves: np.ndarray, has_gt: np.ndarray) -> np.ndarray:
    """[type, recall, area]: the mean curve over the categories with ground truth in each area."""
    weights = has_gt.astype(np.float64)
    return (curves * weights).sum(axis=2) / np.maximum(weights.sum(axis=0), 1)


def _plot(curves: np.ndarray, has_gt: np.ndarray, title: str, path: Path) -> Path:
    """Nested PR curves ``[type, recall, area]``, the band under each curve coloured, one
    panel per area range."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recall = np.linspace(0, 1, curves.shape[1])
    fig, axes = plt.subplots(2, 2, figsize=(9, 8))
    for a, ax in enumerate(axes.flat):
        ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="recall", ylabel="precision", title=f"{AREAS[a]} areas")
        if not has_gt[a]:
            ax.text(0.5, 0.5, "no ground truth", ha="center", va="center")
            continue
        below = np.zeros_like(recall)
        for i, (kind, color) in enumerate(zip(ERROR_TYPES, ERROR_COLORS)):
            ax.fill_between(recall, below, curves[i, :, a], color=color, label=f"[{curves[i, :, a].mean():.3f}] {kind}")
            ax.plot(recall, curves[i, :, a], color="black", linewidth=0.5)
            below = curves[i, :, a]
        ax.legend(loc="lower left", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _markdown(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    cells = [[row[0], *("-" if math.isnan(v) else f"{100 * v:.1f}" for v in row[1:])] for row in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, row)) + " |" for row in cells])
