"""COCO-format datasets: one ``Sample`` (image tensor + ``Instances``) per image.

Annotations are validated once, at construction, in a single pass; ``__getitem__`` only
reads the image, decodes masks and applies the transforms. Rules for bad input:

1. An image file listed in ``images`` but absent from ``img_dir`` is an error at
   construction, listing the first few missing files and their count. An image that
   cannot be decoded, or whose size on disk differs from the json, is an error when it
   is loaded, naming the file.
2. A box with zero or negative width or height, or one lying entirely outside its image,
   is degenerate: the annotation is skipped and a warning gives the count and the first
   few annotation ids.
3. A box partly outside its image is clipped to it; a warning gives the count and ids.
4. An annotation whose ``category_id`` is not in ``categories``, or whose ``image_id`` is
   not in ``images``, or whose ``bbox`` is not four numbers, is an error naming the
   annotation id (and image id and category id).
5. An image left with no valid annotation is kept with empty ``Instances``, or dropped
   when ``filter_empty=True`` (the count is logged).
6. ``iscrowd=1`` annotations are not training targets (as in torchvision and detectron2):
   they are left out of ``Instances`` but stay in ``coco`` for evaluation.
7. With ``with_masks=True``: polygons of fewer than three points are dropped, and an
   annotation left without a polygon or RLE is skipped with a warning (as detectron2
   does); an RLE whose ``size`` differs from its image is an error.
8. With ``with_keypoints=True``: the keypoint names come from the categories (one list
   for all of them; an error if none has one); annotations without ``keypoints`` get
   all-zero (invisible) keypoints; a ``keypoints`` list of the wrong length is an error.
9. With a ``proposals_file`` (Fast R-CNN), an image without an entry in it is an error
   at construction naming the image id and the file; each image keeps its
   ``proposals_topk`` best-scoring proposals.

Warnings and counts go to the ``detzoo.data`` logger.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torch import Tensor

from detzoo.data.transforms import Transform
from detzoo.evaluation.proposals import load_proposals, proposals_for
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


def _valid_segmentation(segm) -> list | dict | None:
    """An RLE as is, or the polygons with at least three points; None if nothing is left."""
    if isinstance(segm, dict):
        return segm
    polygons = [p for p in segm or [] if len(p) >= 6 and len(p) % 2 == 0]
    return polygons or None


def _to_rle(segm: list | dict, height: int, width: int) -> dict:
    """Compressed RLE of a polygon list, an uncompressed RLE or a compressed RLE."""
    if isinstance(segm, list):
        return mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    if isinstance(segm["counts"], list):
        return mask_utils.frPyObjects(segm, height, width)
    return segm


def read_image(path: Path, size: Size | None = None) -> Tensor:
    """(3, H, W) float32 RGB 0-255; an error naming the file if it cannot be decoded or,
    when ``size`` (h, w) is given, has another size."""
    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
    except OSError as e:
        raise OSError(f"cannot read image {path}: {e}") from e
    if size is not None and (rgb.height, rgb.width) != tuple(size):
        raise ValueError(
            f"image {path} is {rgb.width}x{rgb.height} (w x h) on disk "
            f"but {size[1]}x{size[0]} in the annotation file"
        )
    return torch.from_numpy(np.asarray(rgb, dtype=np.float32)).permute(2, 0, 1).contiguous()


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
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints timings
            self.coco = COCO(self.ann_file)
        categories = sorted(self.coco.dataset.get("categories", []), key=lambda c: c["id"])
        self.cat_ids: list[int] = [c["id"] for c in categories]
        self.class_names: list[str] = [c["name"] for c in categories]
        keypoint_lists = {tuple(c["keypoints"]) for c in categories if c.get("keypoints")}
        if len(keypoint_lists) > 1:
            raise ValueError(f"{self.ann_file}: categories define different keypoint lists")
        self.keypoint_names: list[str] = list(next(iter(keypoint_lists), ()))
        if with_keypoints and not self.keypoint_names:
            raise ValueError(f"{self.ann_file}: with_keypoints=True but no category lists keypoint names")

        records = self._validate()
        if filter_empty:
            kept = [r for r in records if len(r.labels)]
            dropped = len(records) - len(kept)
            logger.info("%s: dropped %d images without valid annotations", self.ann_file, dropped)
            records = kept
        missing = [r.file_name for r in records if not (self.img_dir / r.file_name).is_file()]
        if missing:
            raise FileNotFoundError(
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
            for r in self._records:  # fail now, not in the middle of an epoch
                proposals_for(self.proposals, r.image_id, path=proposals_file)

    def _validate(self) -> list[_Record]:
        """One pass over the annotations: check ids, skip or clip boxes, group by image."""
        label_of = {cat_id: label for label, cat_id in enumerate(self.cat_ids)}
        num_keypoints = len(self.keypoint_names)
        per_image: dict[int, list] = {image_id: [] for image_id in self.coco.imgs}
        degenerate, clipped, no_segmentation = [], [], []
        for ann in self.coco.dataset.get("annotations", []):
            ann_id, image_id, cat_id = ann["id"], ann["image_id"], ann["category_id"]
            if image_id not in per_image:
                raise ValueError(
                    f"{self.ann_file}: annotation {ann_id} refers to image id {image_id}, not in 'images'"
                )
            if cat_id not in label_of:
                raise ValueError(
                    f"{self.ann_file}: annotation {ann_id} (image {image_id}) has category id {cat_id}, "
                    f"not in 'categories' (ids {_some(self.cat_ids)})"
                )
            bbox = ann.get("bbox")
            if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
                raise ValueError(
                    f"{self.ann_file}: annotation {ann_id} (image {image_id}) has bbox {bbox!r}, "
                    "expected [x, y, width, height]"
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
                segm = _valid_segmentation(ann.get("segmentation"))
                if isinstance(segm, dict) and list(segm.get("size", ())) != [height, width]:
                    raise ValueError(
                        f"{self.ann_file}: annotation {ann_id} (image {image_id}) has an RLE of size "
                        f"{segm.get('size')}, but the image is (h, w) {[height, width]}"
                    )
                if segm is None:
                    no_segmentation.append(ann_id)
                    continue
            keypoints = None
            if self.with_keypoints:
                flat = ann.get("keypoints") or [0.0] * (3 * num_keypoints)
                if len(flat) != 3 * num_keypoints:
                    raise ValueError(
                        f"{self.ann_file}: annotation {ann_id} (image {image_id}) has {len(flat)} "
                        f"keypoint values, expected 3 x {num_keypoints}"
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
            rles = [_to_rle(segm, r.height, r.width) for segm in r.segmentations]
            masks = torch.from_numpy(
                np.ascontiguousarray(mask_utils.decode(rles).transpose(2, 0, 1))
                if rles
                else np.zeros((0, r.height, r.width), dtype=np.uint8)
            )
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
