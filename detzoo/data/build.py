"""The ``data`` section of a config -> transforms, datasets and loaders."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from detzoo.config import ConfigError, check_keys, check_not_none
from detzoo.data.coco import CocoDataset
from detzoo.data.transforms import Compose, build_transforms, keypoint_flip_map
from detzoo.structures import PixelFormat

DATA_KEYS = (
    "train",
    "val",
    "train_scales",
    "test_scale",
    "max_size",
    "flip_prob",
    "resize",
    "scale_ratio_range",
    "crop_size",
    "pad_size",
    "images_per_gpu",
    "num_workers",
    "filter_empty",
    "proposals_topk_train",
    "proposals_topk_test",
    "test_time_aug",  # read by detzoo.engine.tta.build_tta
)
# None: no such split (checked where one is read), no ratio range, crop, padding or TTA
DATA_OPTIONAL = ("train", "val", "scale_ratio_range", "crop_size", "pad_size", "test_time_aug")
SPLIT_KEYS = ("ann_file", "img_dir", "proposals_file")


def check_data(cfg: Mapping[str, Any]) -> None:
    """A ``data`` section's keys: known ones, None only where it means "none"."""
    check_keys("data", cfg, DATA_KEYS)
    check_not_none("data", cfg, [k for k in DATA_KEYS if k not in DATA_OPTIONAL])


def build_transform(
    cfg: Mapping[str, Any], pixel_format: PixelFormat, *, train: bool, flip_map: Sequence[tuple[int, int]] = ()
) -> Compose:
    """The training or test pipeline of a ``data`` config (see ``build_transforms``)."""
    check_data(cfg)
    return build_transforms(
        train=train,
        scales=cfg["train_scales"] if train else (cfg["test_scale"],),
        max_size=cfg["max_size"],
        flip_prob=cfg["flip_prob"],
        flip_map=flip_map,
        pixel_format=pixel_format,
        resize=cfg["resize"],
        scale_ratio_range=cfg["scale_ratio_range"],
        crop_size=cfg["crop_size"],
        pad_size=cfg["pad_size"],
    )


def model_targets(outputs: Sequence[str]) -> dict[str, bool]:
    """``build_dataset``'s target arguments for a model that predicts ``outputs``
    (``DetectionModel.outputs``): masks and keypoints only where it learns them."""
    return {"with_masks": "masks" in outputs, "with_keypoints": "keypoints" in outputs}


def build_dataset(
    cfg: Mapping[str, Any],
    split: str,
    pixel_format: PixelFormat,
    *,
    train: bool,
    seed: int = 0,
    with_masks: bool = False,
    with_keypoints: bool = False,
) -> CocoDataset:
    """The dataset of ``data.<split>`` with the training or test transform (random
    transforms seeded by ``seed``; see ``CocoDataset.set_epoch``). With keypoints, the
    flip swaps the dataset's left/right keypoints."""
    check_data(cfg)  # before reading any file
    if cfg.get(split) is None:
        raise ConfigError(f"data.{split} is not set; give it as dict(ann_file=..., img_dir=...)")
    check_keys(f"data.{split}", cfg[split], SPLIT_KEYS)
    dataset = CocoDataset(
        cfg[split]["ann_file"],
        cfg[split]["img_dir"],
        filter_empty=train and cfg["filter_empty"],
        with_masks=with_masks,
        with_keypoints=with_keypoints,
        seed=seed,
        proposals_file=cfg[split].get("proposals_file"),
        proposals_topk=cfg["proposals_topk_train" if train else "proposals_topk_test"],
    )
    flip_map = keypoint_flip_map(dataset.keypoint_names) if with_keypoints else ()
    dataset.transforms = build_transform(cfg, pixel_format, train=train, flip_map=flip_map)
    return dataset
