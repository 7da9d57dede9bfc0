"""The one inference path of ``Detector.predict``, ``detzoo test`` / evaluation and
test-time augmentation: images as read -> the test transform (or TTA's augmentations)
-> the model -> detections in the original images' pixels."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from detzoo.data.transforms import Compose
from detzoo.detectors.model import DetectionModel
from detzoo.engine.tta import TestTimeAug
from detzoo.structures import Instances


@torch.no_grad()
def predict_images(
    model: DetectionModel,
    images: Sequence[Tensor],
    *,
    transform: Compose,
    proposals: Sequence[Instances] | None = None,
    tta: TestTimeAug | None = None,
) -> list[Instances]:
    """Detections of ``model`` (in eval mode) for ``images``, (3, H, W) RGB 0-255 as read,
    in their pixels: boxes, scores, labels and, as the model predicts them, pasted masks
    or keypoints (an RPN: its proposals). ``transform``: the test transform
    (``build_transform(..., train=False)``), applied to each image and its
    ``proposals`` (Fast R-CNN's, in the image's pixels), the images batched together;
    with ``tta`` its augmentations replace it, image by image."""
    if tta is not None:
        return [tta(model, image, p) for image, p in zip(images, proposals or [None] * len(images))]
    inputs = [transform(image, *([] if proposals is None else [proposals[i]])) for i, image in enumerate(images)]
    return model(
        [x[0] for x in inputs],
        original_sizes=[tuple(image.shape[-2:]) for image in images],
        proposals=None if proposals is None else [x[1] for x in inputs],
    )
