"""COCO-format datasets: one ``Sample`` (image tensor + ``Instances``) per image.

The annotation file is read with ``load_coco`` and its annotations are validated once, at
construction, in a single pass; ``__getitem__`` only reads the image (``detzoo.data.images``),
decodes masks and applies the transforms. What each kind of bad input does (an error, a
clip, or a skip with a logged count) is listed in one place, ``docs/data_rules.md``; in
short:

- errors (``DataError`` or ``MissingFileError``, naming the file and the image /
  annotation id): invalid JSON; an image, annotation or category without its required
  keys or with a non-integer id; an id given twice; no images; an annotation naming an
  unknown image or category; a bbox that is not four finite numbers; malformed polygons,
  RLEs or keypoints; missing, undecodable or resized image files; a proposals file
  without an entry for an image.
- skipped, with a logged count and the first few ids: degenerate boxes (zero or negative
  size, or entirely outside the image); annotations left without a polygon of three
  points or an RLE (with masks); images without annotations when ``filter_empty``.
- clipped, with a logged count: boxes partly outside the image.
- ``iscrowd=1`` annotations are not training targets (torchvision, detectron2) but stay
  in ``coco`` for evaluation.
- images are read in their stored pixel frame (EXIF orientation not applied), 16-bit
  images scaled to 8 bit, grayscale / palette / CMYK converted to RGB and alpha dropped.

Warnings and counts go to the ``detzoo.data`` logger.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from pycocotools.coco import COCO
from torch import Tensor

from detzoo.data.images import read_image
from detzoo.data.proposals import load_proposals, proposals_for
from detzoo.data.transforms import Transform
from detzoo.errors import DataError, MissingFileError
from detzoo.evaluation.coco import coco_index
from detzoo.evaluation.segmentation import finite_numbers, rles_to_masks, segmentation_problem, to_rle
from detzoo.structures import Instances, Size

logger = logging.getLogger("detzoo.data")

_SHOWN_IDS = 5  # how many offending ids / files an error or warning lists


@dataclass
class Sample:
    """One image after transforms, with its objects in the transformed image's pixels."""

    image: Tensor  # (3, H, W) float32: RGB 0-255, or normalised by the transforms
    instances: Instances
    image_id: int
    original_size: Size  # (h, w) as on disk
    file_name: str
    proposals: Instances | None = None  # precomputed proposals (Fast R-CNN), transformed alike


@dataclass
class _Record:
    """The valid (clipped) targets of one image, as found at construction."""

    image_id: int
    file_name: str
    height: int
    width: int
    boxes: np.ndarray  # (N, 4) float32 xyxy
    labels: np.ndarray  # (N,) int64
    segmentations: list | None  # N polygon lists / RLE dicts when with_masks
    keypoints: np.ndarray | None  # (N, K, 3) float32 when with_keypoints


def _some(items: list) -> str:
    shown = ", ".join(str(i) for i in items[:_SHOWN_IDS])
    return shown + (", ..." if len(items) > _SHOWN_IDS else "")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A finite int or float (not a bool, not a string, not NaN)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_size(value: Any) -> bool:
    return _is_number(value) and value > 0 and float(value).is_integer()


# What each entry of an annotation file's lists must hold: key -> (description, check).
_REQUIRED: dict[str, dict[str, tuple[str, Callable[[Any], bool]]]] = {
    "images": {
        "id": ("an integer", _is_int),
        "file_name": ("a string", lambda v: isinstance(v, str)),
        "height": ("a positive whole number", _is_size),
        "width": ("a positive whole number", _is_size),
    },
    "annotations": {
        "id": ("an integer", _is_int),
        "image_id": ("an integer", _is_int),
        "category_id": ("an integer", _is_int),
    },
    "categories": {"id": ("an integer", _is_int), "name": ("a string", lambda v: isinstance(v, str))},
}


def _check_entries(path: Path, key: str, entries: Any) -> None:
    """Each entry of ``entries`` (the file's ``key`` list) has the required keys with the
    right types, and no id is given twice; else a ``DataError`` naming the entry."""
    if not isinstance(entries, list):
        raise DataError(f"{path}: {key!r} must be a list, got {type(entries).__name__}")
    what = {"images": "image", "annotations": "annotation", "categories": "category"}[key]
    seen: set[int] = set()
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise DataError(f"{path}: entry {index} of {key!r} is a {type(entry).__name__}, expected an object")
        name = f"{what} {entry['id']}" if _is_int(entry.get("id")) else f"entry {index} of {key!r}"
        for field, (expected, ok) in _REQUIRED[key].items():
            if field not in entry:
                raise DataError(f"{path}: {name} has no {field!r}")
            if not ok(entry[field]):
                raise DataError(f"{path}: {name} has {field} {entry[field]!r}, expected {expected}")
        if entry["id"] in seen:
            raise DataError(f"{path}: {what} id {entry['id']} is given more than once in {key!r}")
        seen.add(entry["id"])


def load_coco(ann_file: str | Path) -> COCO:
    """The pycocotools index of a COCO annotation file, after checking what indexing and
    detzoo rely on: valid JSON, ``images`` / ``annotations`` / ``categories`` lists whose
    entries hold their required keys, integer ids, no id given twice (pycocotools would
    silently keep the last). Errors name the file and the entry."""
    path = Path(ann_file)
    if not path.is_file():
        raise MissingFileError(f"annotation file not found: {path}")
    try:
        data = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise DataError(f"{path}: not a COCO annotation file (expected a JSON object with 'images', "
                        f"'annotations' and 'categories', got a {type(data).__name__})")
    for key in _REQUIRED:
        _check_entries(path, key, data.setdefault(key, []))
    return coco_index(data)


def _valid_segmentation(segm) -> list | dict | None:
    """An RLE as is, or the polygons with at least three points; None if nothing is left."""
    if isinstance(segm, dict):
        return segm
    polygons = [p for p in segm or [] if len(p) >= 6 and len(p) % 2 == 0]
    return polygons or None


class CocoDataset(torch.utils.data.Dataset):
    """Images and annotations of a COCO json; see the module docstring for bad input.

    ``class_names[label]`` and ``cat_ids[label]`` (the COCO category id) follow categories
    sorted by id; ``image_ids[index]`` is the COCO image id of ``self[index]``.
    """

    def __init__(
        self,
        ann_file: str | Path,
        img_dir: str | Path,
        *,
        transforms: Transform | None = None,
        filter_empty: bool = False,
        with_masks: bool = False,
        with_keypoints: bool = False,
        seed: int = 0,
        proposals_file: str | Path | None = None,
        proposals_topk: int = 2000,
    ) -> None:
        self.ann_file = str(ann_file)
        self.seed = seed
        self.epoch = 0
        self.img_dir = Path(img_dir)
        self.transforms = transforms
        self.with_masks = with_masks
        self.with_keypoints = with_keypoints
        self.coco = load_coco(self.ann_file)
        categories = sorted(self.coco.dataset.get("categories", []), key=lambda c: c["id"])
        self.cat_ids: list[int] = [c["id"] for c in categories]
        self.class_names: list[str] = [c["name"] for c in categories]
        keypoint_lists = {tuple(c["keypoints"]) for c in categories if c.get("keypoints")}
        if len(keypoint_lists) > 1:
            raise DataError(f"{self.ann_file}: categories define different keypoint lists")
        self.keypoint_names: list[str] = list(next(iter(keypoint_lists), ()))
        if with_keypoints and not self.keypoint_names:
            raise DataError(f"{self.ann_file}: with_keypoints=True but no category lists keypoint names")

        records = self._validate()
        if filter_empty:
            kept = [r for r in records if len(r.labels)]
            dropped = len(records) - len(kept)
            logger.info("%s: dropped %d images without valid annotations", self.ann_file, dropped)
            records = kept
        if not records:
            raise DataError(f"{self.ann_file} lists no images" if not self.coco.imgs else
                            f"{self.ann_file}: none of its {len(self.coco.imgs)} images has a valid annotation "
                            "(filter_empty drops images without one)")
        missing = [r.file_name for r in records if not (self.img_dir / r.file_name).is_file()]
        if missing:
            raise MissingFileError(
                f"{self.ann_file}: {len(missing)} image file(s) missing under {self.img_dir}: "
                + _some(missing)
            )
        self._records = records
        self.image_ids: list[int] = [r.image_id for r in records]
        self.proposals_file = proposals_file
        self.proposals_topk = proposals_topk
        self.proposals = None
        if proposals_file is not None:
            self.proposals = load_proposals(proposals_file)
            without = [r.image_id for r in records if r.image_id not in self.proposals]
            if without:  # fail now, not in the middle of an epoch
                raise DataError(
                    f"proposals file {proposals_file} has no entry for {len(without)} image(s) of {self.ann_file}, "
                    f"ids {_some(without)}; write it with `detzoo test` of an RPN on this same dataset"
                )

    def _validate(self) -> list[_Record]:
        """One pass over the annotations: check ids, skip or clip boxes, group by image."""
        label_of = {cat_id: label for label, cat_id in enumerate(self.cat_ids)}
        num_keypoints = len(self.keypoint_names)
        per_image: dict[int, list] = {image_id: [] for image_id in self.coco.imgs}
        degenerate, clipped, no_segmentation = [], [], []
        for ann in self.coco.dataset.get("annotations", []):
            ann_id, image_id, cat_id = ann["id"], ann["image_id"], ann["category_id"]
            if image_id not in per_image:
                raise DataError(
                    f"{self.ann_file}: annotation {ann_id} refers to image id {image_id}, not in 'images'"
                )
            if cat_id not in label_of:
                raise DataError(
                    f"{self.ann_file}: annotation {ann_id} (image {image_id}) has category id {cat_id}, "
                    f"not in 'categories' (ids {_some(self.cat_ids)})"
                )
            bbox = ann.get("bbox")
            if not finite_numbers(bbox) or len(bbox) != 4:
                raise DataError(
                    f"{self.ann_file}: annotation {ann_id} (image {image_id}) has bbox {bbox!r}, "
                    "expected [x, y, width, height], four finite numbers"
                )
            if ann.get("iscrowd", 0):
                continue
            info = self.coco.imgs[image_id]
            height, width = info["height"], info["width"]
            x, y, w, h = (float(v) for v in bbox)
            box = [max(x, 0.0), max(y, 0.0), min(x + w, width), min(y + h, height)]
            if w <= 0 or h <= 0 or box[2] <= box[0] or box[3] <= box[1]:
                degenerate.append(ann_id)
                continue
            segm = None
            if self.with_masks:
                segm = ann.get("segmentation")
                problem = None if segm is None else segmentation_problem(segm, (height, width))
                if problem:
                    raise DataError(f"{self.ann_file}: annotation {ann_id} (image {image_id}) has {problem}")
                segm = _valid_segmentation(segm)
                if segm is None:
                    no_segmentation.append(ann_id)
                    continue
            keypoints = None
            if self.with_keypoints:
                flat = ann.get("keypoints") or [0.0] * (3 * num_keypoints)
                if not finite_numbers(flat) or len(flat) != 3 * num_keypoints:
                    raise DataError(
                        f"{self.ann_file}: annotation {ann_id} (image {image_id}) has keypoints {str(flat)[:60]}, "
                        f"expected 3 x {num_keypoints} finite numbers"
                    )
                keypoints = np.asarray(flat, dtype=np.float32).reshape(num_keypoints, 3)
            if box != [x, y, x + w, y + h]:
                clipped.append(ann_id)
            per_image[image_id].append((box, label_of[cat_id], segm, keypoints))

        for what, ids in (
            ("skipped degenerate boxes (zero/negative size or outside the image)", degenerate),
            ("clipped boxes partly outside the image", clipped),
            ("skipped annotations without a valid polygon or RLE", no_segmentation),
        ):
            if ids:
                logger.warning("%s: %s: %d annotation(s), ids %s", self.ann_file, what, len(ids), _some(ids))
        return [self._record(image_id, per_image[image_id], num_keypoints) for image_id in sorted(per_image)]

    def _record(self, image_id: int, anns: list, num_keypoints: int) -> _Record:
        info = self.coco.imgs[image_id]
        return _Record(
            image_id=image_id,
            file_name=info["file_name"],
            height=info["height"],
            width=info["width"],
            boxes=np.asarray([a[0] for a in anns], dtype=np.float32).reshape(-1, 4),
            labels=np.asarray([a[1] for a in anns], dtype=np.int64),
            segmentations=[a[2] for a in anns] if self.with_masks else None,
            keypoints=(
                np.asarray([a[3] for a in anns], dtype=np.float32).reshape(-1, num_keypoints, 3)
                if self.with_keypoints
                else None
            ),
        )

    def __len__(self) -> int:
        return len(self._records)

    def set_epoch(self, epoch: int) -> None:
        """Random transforms of ``self[i]`` depend on (seed, epoch, i) only, not on which
        worker loads it or what was loaded before, so training resumes exactly."""
        self.epoch = epoch

    def _generator(self, index: int) -> torch.Generator:
        state = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1, np.uint64)[0]
        return torch.Generator().manual_seed(int(state))

    def __getitem__(self, index: int) -> Sample:
        r = self._records[index]
        image = read_image(self.img_dir / r.file_name, (r.height, r.width))
        masks = None
        if r.segmentations is not None:
            rles = [to_rle(segm, r.height, r.width) for segm in r.segmentations]
            masks = torch.from_numpy(rles_to_masks(rles, r.height, r.width))
        instances = Instances(
            boxes=torch.tensor(r.boxes),
            labels=torch.tensor(r.labels),
            masks=masks,
            keypoints=None if r.keypoints is None else torch.tensor(r.keypoints),
        )
        targets = [instances] if self.proposals is None else [instances, self._proposals(r.image_id)]
        if self.transforms is not None:
            image, *targets = self.transforms(image, *targets, generator=self._generator(index))
        return Sample(
            image=image,
            instances=targets[0],
            image_id=r.image_id,
            original_size=(r.height, r.width),
            file_name=r.file_name,
            proposals=targets[1] if len(targets) > 1 else None,
        )

    def _proposals(self, image_id: int) -> Instances:
        boxes, scores = proposals_for(self.proposals, image_id, path=self.proposals_file)
        order = np.argsort(-scores, kind="stable")[: self.proposals_topk]
        boxes = torch.from_numpy(boxes[order]).float()
        return Instances(boxes=boxes, labels=torch.zeros(len(boxes), dtype=torch.int64),
                         scores=torch.from_numpy(scores[order]).float())

    def aspect_ratio_flags(self) -> list[int]:
        """Per index, 1 if the image is landscape or square (w >= h), else 0; from the json."""
        return [int(r.width >= r.height) for r in self._records]
