"""The one inference path of ``Detector.predict``, ``detzoo test`` / evaluation and
test-time augmentation: images as read -> the test transform (or TTA's augmentations)
-> the model -> detections in the original images' pixels, in inference mode and, with
``runtime.amp``, under autocast."""

from __future__ import annotations

import contextlib
import functools
import logging
from typing import Iterator, Sequence

import torch
from torch import Tensor

from detzoo.config import ConfigError
from detzoo.data.transforms import Compose
from detzoo.detectors.model import DetectionModel
from detzoo.engine.tta import TestTimeAug
from detzoo.structures import Instances

logger = logging.getLogger("detzoo.runtime")

AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def emulated_bf16(device: torch.device) -> bool:
    """Whether bf16 runs emulated on ``device``: a CPU without AVX512-BF16 or AMX, where
    oneDNN's bf16 convolutions run ~10x slower than its fp32 ones (3x3, 256 channels on a
    2-core AMD EPYC with AVX2: 13.9 against 149.8 GFLOP/s)."""
    return device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported()


@functools.cache
def _warn_emulated_bf16() -> None:
    logger.warning("runtime.amp='bf16': this CPU has no native bf16 (no AVX512-BF16 / AMX), so bf16 runs "
                   "emulated, several times slower than fp32 (leave runtime.amp unset for fp32)")


def autocast_dtype(amp: str | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``runtime.amp`` on ``device``: None runs in fp32; "fp16" is
    CUDA only (with gradient scaling); "bf16" runs on the CPU and on GPUs that support it
    (no scaling), with a warning where the CPU emulates it. fp16 on the CPU is an error
    rather than a silent switch to bf16."""
    if amp is None:
        return None
    if amp not in AMP_DTYPES:
        raise ConfigError(f"runtime.amp must be None, 'fp16' or 'bf16', got {amp!r}")
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError(f"runtime.amp='fp16' needs CUDA (device: {device}); on the CPU use runtime.amp='bf16'")
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"runtime.amp='bf16': {torch.cuda.get_device_name(device)} has no bfloat16; use 'fp16'")
    if amp == "bf16" and emulated_bf16(device):
        _warn_emulated_bf16()  # once a process: a slow choice, not a wrong one
    return AMP_DTYPES[amp]


@contextlib.contextmanager
def inference_context(device: torch.device, amp: str | None) -> Iterator[None]:
    """Inference mode, and with ``amp`` (``runtime.amp``) autocast in its dtype: how
    every inference runs (``predict_images``, ``detzoo benchmark``)."""
    dtype = autocast_dtype(amp, device)
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        yield


def predict_images(
    model: DetectionModel,
    images: Sequence[Tensor],
    *,
    transform: Compose,
    proposals: Sequence[Instances] | None = None,
    tta: TestTimeAug | None = None,
    amp: str | None = None,
) -> list[Instances]:
    """Detections of ``model`` (in eval mode) for ``images``, (3, H, W) RGB 0-255 as read,
    in their pixels: boxes, scores, labels and, as the model predicts them, pasted masks
    or keypoints (an RPN: its proposals). ``transform``: the test transform
    (``build_transform(..., train=False)``), applied to each image and its
    ``proposals`` (Fast R-CNN's, in the image's pixels), the images batched together;
    with ``tta`` its augmentations replace it, image by image. ``amp``: ``runtime.amp``,
    the network under autocast in that dtype (decoding, NMS and pasting stay fp32). The
    images go to the model's device as read (uint8 on a GPU: a quarter of the float
    image's transfer), so resizing and normalising run there."""
    images = [image.to(model.device) for image in images]
    proposals = None if proposals is None else [p.to(model.device) for p in proposals]
    with inference_context(model.device, amp):
        if tta is not None:
            return [tta(model, image, p) for image, p in zip(images, proposals or [None] * len(images))]
        inputs = [transform(image, *([] if proposals is None else [proposals[i]])) for i, image in enumerate(images)]
        return model(
            [x[0] for x in inputs],
            original_sizes=[tuple(image.shape[-2:]) for image in images],
            proposals=None if proposals is None else [x[1] for x in inputs],
        )
