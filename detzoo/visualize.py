"""Objects (predictions or ground truth) drawn on images: boxes with class (and score),
masks blended in, keypoints as dots."""

from __future__ import annotations

import collections
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

from detzoo.errors import OutputError

PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240)]
MASK_ALPHA = 0.5
KEYPOINT_RADIUS = 2


def draw_detections(
    image: Image.Image,
    prediction: Mapping[str, Any],
    *,
    score_thresh: float = 0.5,
    keypoint_thresh: float = 0.05,
) -> Image.Image:
    """A copy of ``image`` with the objects of ``prediction``, as ``Detector.predict``
    returns them: ``boxes`` (N, 4) xyxy in the image's pixels, ``labels``, ``class_names``
    and optionally ``scores`` (objects below ``score_thresh`` are left out; ground truth
    has no scores and is drawn whole, labelled by class only), ``masks`` (N, H, W) of the
    image's size (blended in), ``keypoints`` (N, K, 3) x, y and a score or visibility (a
    dot where it exceeds ``keypoint_thresh``)."""
    scores = prediction.get("scores")
    keep = [i for i in range(len(prediction["boxes"])) if scores is None or scores[i] >= score_thresh]
    colors = {i: PALETTE[int(prediction["labels"][i]) % len(PALETTE)] for i in keep}
    out = image.convert("RGB").copy()
    masks = prediction.get("masks")
    if masks is not None and keep:
        pixels = np.asarray(out, dtype=np.float32).copy()
        if tuple(masks.shape[1:]) != pixels.shape[:2]:
            raise ValueError(f"masks are {tuple(masks.shape[1:])} (h, w) but the image is {pixels.shape[:2]}")
        for i in keep:
            inside = np.asarray(masks[i], dtype=bool)
            pixels[inside] = (1 - MASK_ALPHA) * pixels[inside] + MASK_ALPHA * np.asarray(colors[i], np.float32)
        out = Image.fromarray(np.rint(pixels).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    keypoints = prediction.get("keypoints")
    for i in keep:
        box = [float(v) for v in prediction["boxes"][i]]
        draw.rectangle(box, outline=colors[i], width=2)
        name = prediction["class_names"][i]
        draw.text((box[0] + 2, box[1] + 1), name if scores is None else f"{name} {scores[i]:.2f}", fill=colors[i])
        if keypoints is not None:
            r = KEYPOINT_RADIUS
            for x, y, v in np.asarray(keypoints[i], dtype=np.float32):
                if v > keypoint_thresh:
                    draw.ellipse([x - r, y - r, x + r, y + r], fill=colors[i])
    return out


def to_jsonable(prediction: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in prediction.items()}


def drawing_paths(images: Sequence[str | Path], out: str | Path) -> list[Path]:
    """One PNG file in ``out`` per image path, never two for one: ``<stem>.png``; for images
    whose stems coincide, their path from the folder they share, separators as "_"
    (``a/img.png``, ``b/img.png`` -> ``a_img.png``, ``b_img.png``), with the suffix where
    that is not enough (``img.png``, ``img.jpg`` -> ``img_png.png``, ``img_jpg.png``).
    Names are compared ignoring case (as some file systems do)."""
    paths = [Path(os.path.abspath(p)) for p in images]
    names = [p.stem for p in paths]
    clashing = _clashing(names)
    if clashing:
        common = Path(os.path.commonpath([paths[i].parent for i in clashing]))
        for i in clashing:
            names[i] = "_".join(paths[i].relative_to(common).with_suffix("").parts)
    for i in _clashing(names):
        names[i] += "_" + paths[i].suffix.lstrip(".")
    clashing = _clashing(names)
    if clashing:
        raise OutputError(f"images {images[clashing[0]]} and {images[clashing[1]]} would be drawn to one file "
                          f"{Path(out) / names[clashing[0]]}.png; give each image once")
    return [Path(out) / f"{name}.png" for name in names]


def _clashing(names: Sequence[str]) -> list[int]:
    """The positions of the names that another one equals, ignoring case."""
    counts = collections.Counter(name.lower() for name in names)
    return [i for i, name in enumerate(names) if counts[name.lower()] > 1]
