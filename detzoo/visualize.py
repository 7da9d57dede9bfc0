"""Drawn predictions and training curves as PNG files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from PIL import Image, ImageDraw

PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240)]


def draw_detections(image: Image.Image, prediction: Mapping[str, Any], *, score_thresh: float = 0.5) -> Image.Image:
    """A copy of ``image`` with the boxes of ``prediction`` (as returned by
    ``Detector.predict``) scoring at least ``score_thresh``, labelled with class and score."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    for box, score, label, name in zip(
        prediction["boxes"], prediction["scores"], prediction["labels"], prediction["class_names"]
    ):
        if score < score_thresh:
            continue
        color = PALETTE[int(label) % len(PALETTE)]
        draw.rectangle([float(v) for v in box], outline=color, width=2)
        draw.text((float(box[0]) + 2, float(box[1]) + 1), f"{name} {score:.2f}", fill=color)
    return out


def plot_training_log(log_path: str | Path, out_png: str | Path) -> None:
    """Loss against iteration and, when the log has evaluations, box AP against iteration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line.strip()]
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval" in r]
    fig, axes = plt.subplots(1, 2 if evals else 1, figsize=(10 if evals else 5, 4), squeeze=False)
    ax = axes[0][0]
    ax.plot([r["iter"] for r in train], [r["loss"] for r in train], label="total")
    for key in sorted(k for k in train[0] if k.startswith("loss_")):
        ax.plot([r["iter"] for r in train], [r[key] for r in train], label=key, alpha=0.6)
    ax.set(xlabel="iteration", ylabel="loss", title="training loss")
    ax.legend(fontsize=7)
    if evals:
        ax = axes[0][1]
        ax.plot([r["iter"] for r in evals], [100 * r["eval"]["bbox"]["AP"] for r in evals], "o-", label="AP")
        ax.plot([r["iter"] for r in evals], [100 * r["eval"]["bbox"]["AP50"] for r in evals], "s--", label="AP50")
        ax.set(xlabel="iteration", ylabel="box AP (%)", title="validation", ylim=(0, 100))
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def to_jsonable(prediction: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in prediction.items()}
