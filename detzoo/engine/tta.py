"""Test-time augmentation (TTA): detect at several scales, mirrored too, and merge.

For one image (RGB 0-255 as read) and each shorter side ``s`` of ``scales`` (the longer
side at most ``max_size``), the image goes through the config's test transform at that
scale (``build_transform`` with ``test_scale=s``: the same ``Resize`` and resize convention,
``data.resize``, as the plain test) and, with ``flip``, is also mirrored after the resize,
as detectron2's ``DatasetMapperTTA`` does. Then, as detectron2's ``GeneralizedRCNNWithTTA``:

1. Boxes: each augmentation's detections (after the model's own NMS and cap) are mapped
   back to the original image (un-mirrored, then scaled as the plain test's
   post-processing scales them), pooled, and merged by class-wise NMS at the model's own
   test IoU threshold (``model.nms_thresh``: TTA with one augmentation then changes
   nothing; every R-CNN and RetinaNet config in detzoo/configs/ tests at 0.5, Detectron's
   TEST.NMS of the X-152 row), keeping the model's ``detections_per_image``. Optionally
   box voting (Detectron's ``box_voting``, scoring method "ID": each kept box becomes the
   score-weighted mean of the pooled boxes of its class overlapping it by IoU >=
   ``vote_thresh``; scores unchanged).
2. Masks: for the merged boxes, the mask branch runs at every augmentation (the boxes
   mapped into its pixels, mirrored for a mirrored image, the masks mirrored back) and
   the mask probabilities are averaged (Detectron's MASK_AUG "SOFT_AVG") before pasting
   and thresholding as the plain test does. The backbone runs again for this pass, as in
   Detectron and detectron2, rather than holding every augmentation's feature maps.

Without voting, a detection keeps, in the augmentation that found it, the very box that
augmentation predicted (mapping to the original image and back is not exact in floating
point), so TTA at the test scale alone without flip gives the plain test's detections,
mask probabilities included, to the bit (tests/test_tta.py).

Differences from Detectron's X-152 row (``TEST.BBOX_AUG`` / ``MASK_AUG``): Detectron pooled
the pre-NMS scores of every (RoI, class) of every augmentation (its "UNION" heuristics);
here the pool is each augmentation's final detections (detectron2's way; it needs no
per-RoI scores, so RetinaNet merges the same way). Detectron ran its test scale (800) at
TEST.MAX_SIZE 1333, the other scales at 2000; here every scale uses ``max_size``. Detectron
resized the mirrored image; here the resized image is mirrored (equal up to interpolation
rounding). Its voting pooled all pre-NMS candidates of a class; here the pooled detections.

Boxes and masks only: Keypoint R-CNN (whose keypoints detectron2 does not merge either)
and RPN models are refused. Fast R-CNN's proposals follow the image through each
augmentation.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping

import torch
from torch import Tensor
from torchvision.ops import batched_nms, box_iou

from detzoo.config import ConfigError, check_keys
from detzoo.data.build import build_transform
from detzoo.data.transforms import Compose, hflip_instances
from detzoo.detectors.model import DetectionModel, postprocess
from detzoo.errors import InputError
from detzoo.structures import ImageBatch, Instances, scale_boxes

TTA_KEYS = ("scales", "max_size", "flip", "vote_thresh")


def box_voting(kept: Instances, pool: Instances, thresh: float) -> Tensor:
    """Detectron's ``box_voting`` with scoring method "ID": the boxes of ``kept``, each the
    mean of the boxes of ``pool`` of its class that overlap it by IoU >= ``thresh``,
    weighted by their scores. A box nothing votes for (zero area) stays as it is."""
    votes = (box_iou(kept.boxes, pool.boxes) >= thresh) & (kept.labels[:, None] == pool.labels[None])
    weights = votes * pool.scores[None]
    total = weights.sum(1, keepdim=True)
    return torch.where(total > 0, weights @ pool.boxes / total.clamp(min=1e-12), kept.boxes)


def _cat(parts: list[Instances]) -> Instances:
    """Boxes, labels and scores of ``parts`` as one ``Instances``."""
    return Instances(
        boxes=torch.cat([p.boxes for p in parts]),
        labels=torch.cat([p.labels for p in parts]),
        scores=torch.cat([p.scores for p in parts]),
    )


@dataclass(frozen=True)
class _Scale:
    """One scale: its batch (the image, then with flip the mirrored image: one view each)
    and each view's detections in its pixels, as detected."""

    batch: ImageBatch
    results: list[Instances]

    def unmirrored(self) -> list[Instances]:
        """The detections of the views in the unmirrored resized image's pixels."""
        return [r if j == 0 else hflip_instances(r, size[1])
                for j, (r, size) in enumerate(zip(self.results, self.batch.image_sizes))]

    def into_views(self, kept: Instances, size: tuple[int, int]) -> list[Instances]:
        """``kept`` (in the pixels of the original image of ``size``) in each view's pixels."""
        out = []
        for j, image_size in enumerate(self.batch.image_sizes):
            scaled = replace(kept, boxes=scale_boxes(kept.boxes, size, image_size))
            out.append(scaled if j == 0 else hflip_instances(scaled, image_size[1]))
        return out


@dataclass(frozen=True, kw_only=True)
class TestTimeAug:
    """``transforms``: the test transform at each scale; ``flip``: also the mirrored
    images; ``vote_thresh``: box voting IoU (None: no voting). Called with a model in eval
    mode and one image (and its proposals for Fast R-CNN, in its pixels): the merged
    detections in the image's pixels. Built from a config by ``build_tta``."""

    transforms: tuple[Compose, ...]
    flip: bool
    vote_thresh: float | None

    def __post_init__(self) -> None:
        if not self.transforms:
            raise ValueError("TestTimeAug needs at least one transform")

    @torch.no_grad()
    def __call__(self, model: DetectionModel, image: Tensor, proposals: Instances | None = None) -> Instances:
        size = tuple(image.shape[-2:])
        scales = [self._detect(model, transform, image, proposals) for transform in self.transforms]
        found = [r for s in scales for r in s.results]  # per view, in its pixels
        pool = _cat([p for s in scales for p in model.postprocess(s.unmirrored(), s.batch)])
        keep = batched_nms(pool.boxes, pool.scores, pool.labels, model.nms_thresh)[: model.detections_per_image]
        merged = pool[keep]
        if self.vote_thresh is not None:
            merged = replace(merged, boxes=box_voting(merged, pool, self.vote_thresh))
        if "masks" not in model.outputs:
            return merged
        inputs = [v for s in scales for v in s.into_views(merged, size)]
        if self.vote_thresh is None:  # in the view that found it, a detection keeps the box predicted there
            view_of = torch.cat([torch.full((len(r),), v, device=pool.boxes.device) for v, r in enumerate(found)])[keep]
            own_boxes = torch.cat([r.boxes for r in found])[keep]
            inputs = [replace(x, boxes=torch.where((view_of == v)[:, None], own_boxes, x.boxes))
                      for v, x in enumerate(inputs)]
        views = len(scales[0].results)
        probs = []
        for k, s in enumerate(scales):
            masks = model.predict_masks(s.batch, inputs[k * views : (k + 1) * views])
            probs += [r.masks if j == 0 else r.masks.flip(-1) for j, r in enumerate(masks)]
        return postprocess(replace(merged, masks=torch.stack(probs).mean(0)), size, size, model.mask_paste)

    def _detect(self, model: DetectionModel, transform: Compose, image: Tensor, proposals: Instances | None) -> _Scale:
        resized, *props = transform(image, *([] if proposals is None else [proposals]))
        images = [resized]
        if self.flip:
            images.append(resized.flip(-1))
            props += [hflip_instances(p, resized.shape[-1]) for p in props]
        batch = model.preprocess(images, [tuple(image.shape[-2:])] * len(images))
        results, _ = model.detect(batch, proposals=props or None, boxes_only=True)
        return _Scale(batch=batch, results=results)


def build_tta(data: Mapping[str, Any], model: DetectionModel) -> TestTimeAug:
    """The test-time augmentation of a config's ``data`` section (``data.test_time_aug``:
    ``scales``, ``max_size``, ``flip``, ``vote_thresh``) for ``model``, whose test
    transform it reuses at each scale."""
    if model.is_proposal_generator or "keypoints" in model.outputs:
        raise InputError(
            f"test-time augmentation merges boxes and masks; this model predicts {', '.join(model.outputs)}: "
            "test it without TTA"
        )
    if "test_time_aug" not in data:
        raise ConfigError("data.test_time_aug is not set; give it as dict(scales=[...], max_size=..., flip=..., "
                          "vote_thresh=...)")
    cfg = data["test_time_aug"]
    check_keys("data.test_time_aug", cfg, TTA_KEYS)
    missing = [k for k in TTA_KEYS if k not in cfg]
    if missing:
        raise ConfigError(f"data.test_time_aug: missing key(s) {', '.join(missing)}")
    scales, max_size, vote_thresh = cfg["scales"], cfg["max_size"], cfg["vote_thresh"]
    if not isinstance(scales, (list, tuple)) or not scales or not all(_positive_int(s) for s in scales):
        raise ConfigError(f"data.test_time_aug.scales must be a non-empty list of shorter sides, got {scales!r}")
    if not _positive_int(max_size):
        raise ConfigError(f"data.test_time_aug.max_size must be a positive integer, got {max_size!r}")
    if not isinstance(cfg["flip"], bool):
        raise ConfigError(f"data.test_time_aug.flip must be True or False, got {cfg['flip']!r}")
    if vote_thresh is not None and not (isinstance(vote_thresh, (int, float)) and 0 < vote_thresh <= 1):
        raise ConfigError(f"data.test_time_aug.vote_thresh must be None or an IoU in (0, 1], got {vote_thresh!r}")
    transforms = tuple(
        build_transform({**data, "test_scale": s, "max_size": max_size}, model.pixel_format, train=False)
        for s in scales
    )
    return TestTimeAug(transforms=transforms, flip=cfg["flip"], vote_thresh=vote_thresh)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
