"""``detzoo browse``: the ground truth drawn on the images as the network sees them in
training, to PNG files.

Each image goes through the config's training transforms (resize, crop, flip, pad) with the
trainer's seed, as in its first epoch, is padded to the model's ``size_divisibility`` as the
model pads a batch, and is mapped back from the model's pixel format to RGB; its boxes,
labels, masks and keypoints, transformed alike, are drawn with ``detzoo.visualize``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from detzoo.data.build import build_dataset, model_targets
from detzoo.detectors.build import build_model
from detzoo.files import refuse_overwriting
from detzoo.errors import InputError
from detzoo.structures import ImageBatch, PixelFormat
from detzoo.visualize import draw_detections, drawing_paths


def to_rgb(image: Tensor, pixel_format: PixelFormat) -> np.ndarray:
    """(3, H, W) in ``pixel_format`` -> (H, W, 3) uint8 RGB: the inverse of
    ``pixel_format.normalize``, rounded and clipped to 0-255."""
    mean = torch.as_tensor(pixel_format.mean, dtype=image.dtype)[:, None, None]
    std = torch.as_tensor(pixel_format.std, dtype=image.dtype)[:, None, None]
    pixels = (image * std + mean) * pixel_format.scale
    if pixel_format.channel_order == "BGR":
        pixels = pixels.flip(0)
    return pixels.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def browse(cfg: Mapping[str, Any], *, out: str | Path, split: str = "train", num: int = 8) -> list[Path]:
    """Draw the first ``num`` images of ``data.<split>`` after the training transforms
    into ``out`` as ``<file stem>.png`` (``detzoo.visualize.drawing_paths``: a name for each
    image, never one of the dataset's files); returns the files written."""
    if num < 1:
        raise InputError(f"--num must be at least 1, got {num}")
    model = build_model(cfg["model"])
    dataset = build_dataset(
        cfg["data"],
        split,
        model.pixel_format,
        train=True,
        seed=cfg["runtime"]["seed"],
        **model_targets(model.outputs),
    )
    shown = range(min(num, len(dataset)))
    sources = [dataset.img_dir / dataset.coco.imgs[dataset.image_ids[i]]["file_name"] for i in shown]
    paths = drawing_paths(sources, out)
    everything = (dataset.img_dir / image["file_name"] for image in dataset.coco.imgs.values())
    refuse_overwriting(paths, [*everything, dataset.ann_file])
    Path(out).mkdir(parents=True, exist_ok=True)
    for index, path in zip(shown, paths):
        sample = dataset[index]
        batch = ImageBatch.from_tensors([sample.image], [sample.original_size], model.size_divisibility)
        padded_h, padded_w = batch.tensor.shape[-2:]
        instances = sample.instances
        objects: dict[str, Any] = {
            "boxes": instances.boxes.numpy(),
            "labels": instances.labels.numpy(),
            "class_names": [dataset.class_names[label] for label in instances.labels.tolist()],
        }
        if instances.masks is not None:
            h, w = instances.masks.shape[-2:]
            objects["masks"] = F.pad(instances.masks, (0, padded_w - w, 0, padded_h - h)).numpy()
        if instances.keypoints is not None:
            objects["keypoints"] = instances.keypoints.numpy()
        draw_detections(Image.fromarray(to_rgb(batch.tensor[0], model.pixel_format)), objects).save(path)
    return paths
