"""A tiny synthetic COCO dataset: filled shapes (and stick-figure people) on noise.

Deterministic given the seed; made for tests and smoke runs, not for accuracy.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from detzoo.errors import InputError

SHAPES = ("circle", "square", "triangle")
# vertices of each filled shape: the default SHAPES and two more for a second class set
POLYGONS = {"circle": 32, "square": 4, "triangle": 3, "pentagon": 5, "hexagon": 6}
PERSON_KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
PERSON_SKELETON = (  # 1-based keypoint indices, as in COCO's person category
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8),
    (7, 9), (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
)  # fmt: skip
# A person facing the viewer (its left on the image's right), in units of its height.
_PERSON_POSE = np.array([
    (0.0, 0.08), (0.03, 0.06), (-0.03, 0.06), (0.06, 0.08), (-0.06, 0.08),
    (0.15, 0.22), (-0.15, 0.22), (0.22, 0.38), (-0.22, 0.38), (0.25, 0.52), (-0.25, 0.52),
    (0.10, 0.55), (-0.10, 0.55), (0.11, 0.75), (-0.11, 0.75), (0.12, 0.95), (-0.12, 0.95),
])  # fmt: skip
_MAX_IOU = 0.3  # objects may overlap a bit
_PLACEMENT_TRIES = 10


def _shape_polygon(rng: np.random.Generator, shape: str, size: float) -> np.ndarray:
    """(P, 2) vertices of a shape inscribed in a circle of diameter ``size`` at 0."""
    num_vertices = POLYGONS[shape]
    start = 0.0 if shape == "circle" else rng.uniform(0, 2 * math.pi)
    angles = start + np.arange(num_vertices) * 2 * math.pi / num_vertices
    return 0.5 * size * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _person(rng: np.random.Generator, height: float) -> tuple[np.ndarray, float, float]:
    """Keypoints (17, 2) of a jittered standing pose, its line width and head radius."""
    pose = _PERSON_POSE * [rng.uniform(0.8, 1.2), 1.0] + rng.normal(0, 0.015, _PERSON_POSE.shape)
    return pose * height, max(1.0, 0.05 * height), 0.07 * height


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None))
    return float(inter / (np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter))


def _draw_image(
    rng: np.random.Generator, image_size: int, max_objects: int, categories: Sequence[str]
) -> tuple[Image.Image, list[dict]]:
    """A noisy background with up to ``max_objects`` objects; their annotations (no ids)."""
    background = rng.integers(0, 256, 3)
    pixels = background + rng.normal(0, 20, (image_size, image_size, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    placed: list[np.ndarray] = []
    annotations = []
    for _ in range(rng.integers(1, max_objects + 1)):
        label = int(rng.integers(len(categories)))
        name = categories[label]
        color = rng.integers(0, 256, 3)
        while np.abs(color - background).sum() < 150:
            color = rng.integers(0, 256, 3)
        if name != "person":
            points = _shape_polygon(rng, name, rng.uniform(0.12, 0.5) * image_size)
            low, high = points.min(0), points.max(0)
        else:
            points, line_width, head_radius = _person(rng, rng.uniform(0.35, 0.8) * image_size)
            pad = max(line_width / 2, head_radius)
            low, high = points.min(0) - pad, points.max(0) + pad
        for _ in range(_PLACEMENT_TRIES):
            offset = rng.uniform(-low, image_size - high)
            box = np.concatenate([low + offset, high + offset])
            if all(_iou(box, other) < _MAX_IOU for other in placed):
                break
        else:
            continue
        placed.append(box)
        points = points + offset
        fill = tuple(int(c) for c in color)
        annotation = {"category_id": label + 1, "iscrowd": 0}
        if name != "person":
            draw.polygon([tuple(p) for p in points], fill=fill)
            polygon = points
            x, y = polygon[:, 0], polygon[:, 1]
            area = 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
        else:
            for i, j in PERSON_SKELETON:
                draw.line([tuple(points[i - 1]), tuple(points[j - 1])], fill=fill, width=round(line_width))
            nx, ny = points[0]
            draw.ellipse([nx - head_radius, ny - head_radius, nx + head_radius, ny + head_radius], fill=fill)
            x1, y1, x2, y2 = box
            polygon = np.array([(x1, y1), (x2, y1), (x2, y2), (x1, y2)])
            area = float((x2 - x1) * (y2 - y1))
            keypoints = np.concatenate([points, np.full((len(points), 1), 2.0)], axis=1)
            annotation["keypoints"] = [round(float(v), 2) for v in keypoints.ravel()]
            annotation["num_keypoints"] = len(points)
        x1, y1 = polygon.min(0)
        x2, y2 = polygon.max(0)
        annotation.update(
            bbox=[round(float(v), 2) for v in (x1, y1, x2 - x1, y2 - y1)],
            area=round(area, 2),
            segmentation=[[round(float(v), 2) for v in polygon.ravel()]],
        )
        annotations.append(annotation)
    return image, annotations


def make_synthetic_coco(
    out_dir: str | Path,
    *,
    num_images: int,
    image_size: int = 128,
    max_objects: int = 4,
    seed: int = 0,
    categories: Sequence[str] = SHAPES,
) -> Path:
    """Write ``out_dir/images/*.png`` and ``out_dir/annotations.json``; return ``out_dir``.

    ``categories`` (ids 1, 2, ... in this order) are taken from the shapes circle,
    square, triangle, pentagon, hexagon and "person", a stick figure with the 17 COCO keypoints and skeleton
    (``("person",)`` gives a person-only keypoint dataset). Each image has 1 to
    ``max_objects`` objects of 12%-50% of the image (people 35%-80% tall) that overlap at
    most a little.
    """
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    unknown = [c for c in categories if c not in (*POLYGONS, "person")]
    if unknown or not categories:
        raise InputError(f"unknown synthetic categories {unknown}; valid: {', '.join((*POLYGONS, 'person'))}")
    person = {"keypoints": list(PERSON_KEYPOINTS), "skeleton": [list(pair) for pair in PERSON_SKELETON]}
    category_list = [
        {"id": i + 1, "name": name, "supercategory": name if name == "person" else "shape",
         **(person if name == "person" else {})}
        for i, name in enumerate(categories)
    ]  # fmt: skip
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        image, objects = _draw_image(rng, image_size, max_objects, categories)
        file_name = f"{image_id:06d}.png"
        image.save(out / "images" / file_name)
        images.append({"id": image_id, "file_name": file_name, "width": image_size, "height": image_size})
        for obj in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **obj})
    with open(out / "annotations.json", "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": category_list}, f)
    return out


def data_overrides(root: str | Path) -> list[str]:
    """``--set`` items pointing a config's ``data.train`` / ``data.val`` at the
    ``train/`` and ``val/`` datasets written under ``root`` by ``make_synthetic_coco``."""
    root = Path(root)
    return [
        f"data.{split}.{key}={root / split / name}"
        for split in ("train", "val")
        for key, name in (("ann_file", "annotations.json"), ("img_dir", "images"))
    ]
