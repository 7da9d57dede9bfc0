"""Python entry points: ``load_model`` and ``Detector.predict``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image
from torch import Tensor, nn

from detzoo.config import ConfigError, apply_overrides, load_config
from detzoo.data.build import build_transform
from detzoo.data.images import read_image, rgb_array, rgb_tensor
from detzoo.data.transforms import Compose
from detzoo.detectors.build import build_model
from detzoo.engine.checkpoint import load_state
from detzoo.engine.inference import predict_images
from detzoo.engine.tta import build_tta
from detzoo.errors import CheckpointError
from detzoo.structures import Instances
from detzoo.zoo.converters import CONVENTION_KEYS
from detzoo.zoo.weights import read_detector, read_weights

logger = logging.getLogger("detzoo.api")

ImageInput = str | Path | Image.Image | np.ndarray


def _to_tensor(image: ImageInput) -> Tensor:
    """(3, H, W) float RGB 0-255 from a path, a PIL image or an HxWx3 uint8 RGB array."""
    if isinstance(image, (str, Path)):
        return read_image(Path(image))
    if isinstance(image, Image.Image):
        image = rgb_array(image, source="the PIL image given")
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise TypeError(
            "predict takes file paths, PIL images or HxWx3 uint8 RGB arrays; got "
            + (f"array {image.shape} {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__)
        )
    return rgb_tensor(image)


def config_with_meta(cfg: Mapping[str, Any], meta: Mapping[str, Any], *, source: str | Path) -> dict:
    """Apply the conventions that checkpoint ``source`` records (``meta.config_overrides``,
    written by ``detzoo.zoo.converters``): only keys of ``CONVENTION_KEYS``, each value
    checked as a ``--set`` value is, and logged. Any other key (a data path, the schedule)
    is a ``CheckpointError`` naming the checkpoint and the key: a downloaded file may not
    rewrite the config."""
    overrides = meta.get("config_overrides") or {}
    if not isinstance(overrides, Mapping):
        raise CheckpointError(f"checkpoint {source}: meta.config_overrides is a {type(overrides).__name__}, "
                              "not a dict of config keys")
    refused = [key for key in overrides if key not in CONVENTION_KEYS]
    if refused:
        raise CheckpointError(f"checkpoint {source} sets config key {refused[0]!r} (meta.config_overrides), which is "
                              "not one of the model conventions detzoo's converters record: refused")
    items = [f"{key}={value!r}" for key, value in overrides.items()]
    if items:
        logger.info("checkpoint %s sets the conventions it records: %s", source, ", ".join(items))
    return apply_overrides(dict(cfg), items, given_by=f"checkpoint {source} sets")


class Detector(nn.Module):
    """A built detector with what inference needs: class names, the test resize."""

    def __init__(
        self,
        *,
        model: nn.Module,
        class_names: Sequence[str],
        cat_ids: Sequence[int],
        transform: Compose,
        config: Mapping[str, Any],
    ) -> None:
        super().__init__()
        self.model = model
        self.config = dict(config)
        self.class_names = list(class_names)
        self.cat_ids = list(cat_ids)
        self.transform = transform

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def predict(
        self, images: ImageInput | Sequence[ImageInput], batch_size: int = 1, tta: bool = False
    ) -> list[dict[str, Any]]:
        """Per image: ``boxes`` (N, 4) xyxy in original pixels, ``scores``, ``labels`` and
        ``class_names`` (numpy arrays / list); for Mask R-CNN ``masks`` (N, H, W) bool
        pasted into the original image, for Keypoint R-CNN ``keypoints`` (N, K, 3) as x,
        y, score in original pixels. ``tta``: test-time augmentation as the config's
        ``data.test_time_aug`` says (``detzoo.engine.tta``; boxes and masks only). The
        config's ``runtime.amp`` ("bf16", "fp16") runs the network under autocast."""
        if isinstance(images, (str, Path, Image.Image, np.ndarray)):
            images = [images]
        self.model.eval()
        augment = build_tta(self.config["data"], self.model) if tta else None
        out = []
        for start in range(0, len(images), batch_size):
            tensors = [_to_tensor(im) for im in images[start : start + batch_size]]
            results = predict_images(
                self.model, tensors, transform=self.transform, tta=augment, amp=self.config["runtime"].get("amp")
            )
            out.extend(self._to_numpy(r) for r in results)
        return out

    def _to_numpy(self, r: Instances) -> dict[str, Any]:
        labels = r.labels.cpu().numpy()
        out = {
            "boxes": r.boxes.cpu().numpy(),
            "scores": r.scores.cpu().numpy(),
            "labels": labels,
            "class_names": [self.class_names[i] for i in labels],
        }
        if r.masks is not None:
            out["masks"] = r.masks.cpu().numpy()
        if r.keypoints is not None:
            out["keypoints"] = r.keypoints.cpu().numpy()
        return out


def build_detector(
    cfg: Mapping[str, Any], checkpoint: Mapping[str, Any], *, overrides: Sequence[str] = (), source: str | Path = "",
) -> Detector:
    """The ``Detector`` of ``cfg`` with the conventions ``checkpoint`` records applied, then
    ``overrides``, and its weights (if it has any) loaded strictly; its network compiled
    with ``runtime.compile``."""
    meta = checkpoint.get("meta", {})
    cfg = apply_overrides(config_with_meta(cfg, meta, source=source), overrides)
    try:
        model = build_model(cfg["model"])
    except ConfigError as e:  # a value the checkpoint set, not the config's: say so
        given = "".join(overrides)
        recorded = [key for key in meta.get("config_overrides") or {} if key in str(e) and key not in given]
        if not recorded:
            raise
        raise ConfigError(f"{e} ({', '.join(recorded)}: set by checkpoint {source}, meta.config_overrides)") from None
    if "model" in checkpoint:
        load_state(model, checkpoint["model"], source)
    if cfg["runtime"].get("compile"):  # configs stored before runtime.compile lack it
        model.compile_network()
    if model.is_proposal_generator:  # class-agnostic proposals
        class_names, cat_ids = ["object"], [1]
    else:
        num_classes = model.num_classes
        class_names = meta.get("class_names") or [f"class_{i}" for i in range(num_classes)]
        cat_ids = meta.get("cat_ids") or list(range(1, num_classes + 1))
    return Detector(
        model=model,
        class_names=class_names,
        cat_ids=cat_ids,
        transform=build_transform(cfg["data"], model.pixel_format, train=False),
        config=cfg,
    )


def load_model(
    config_or_name: str | Path | None = None,
    checkpoint: str | Path | None = None,
    device: str = "cpu",
    overrides: Sequence[str] = (),
    pretrained: bool = False,
) -> Detector:
    """Build the model of a config (a name such as ``faster_rcnn_r50_fpn_1x_coco`` or a
    path) and load ``checkpoint`` into it: a checkpoint file, or the name of a zoo model,
    whose published weights are downloaded, checked and converted (``detzoo.zoo.weights``).
    ``pretrained=True`` loads the zoo model named ``config_or_name``: its config and its
    published weights. With no config, the checkpoint's is used (a zoo model's config for
    its weights, else the one the checkpoint stores). A checkpoint's recorded conventions
    override the config, and ``overrides`` (``"key=value"`` as with ``--set``) override both."""
    if pretrained:
        if config_or_name is None or checkpoint is not None:
            raise ValueError("load_model(NAME, pretrained=True) takes a zoo model name and no checkpoint")
        config_or_name, checkpoint = None, config_or_name
    if config_or_name is None and checkpoint is None:
        raise ValueError("load_model needs a config, a checkpoint, or both")
    ckpt, source, zoo_config = read_weights(checkpoint) if checkpoint is not None else ({"meta": {}}, "", None)
    meta = ckpt.get("meta", {})
    config = config_or_name if config_or_name is not None else zoo_config
    if config is not None:
        cfg = load_config(config)
    elif "config" in meta:
        cfg = meta["config"]
    else:
        raise ValueError(f"checkpoint {checkpoint} stores no config; pass one")
    return build_detector(cfg, ckpt, overrides=overrides, source=source).to(device).eval()


def train(
    cfg: Mapping[str, Any], *, work_dir: str | Path, resume: bool = False, overwrite: bool = False
) -> dict[str, Any]:
    """Train the model of ``cfg`` (``detzoo.engine.trainer.train``), starting a fresh run
    from the detector that ``runtime.load_from`` names, if any: a zoo model name or a
    checkpoint file of detzoo or of a toolbox it converts (``detzoo.zoo.weights.read_detector``)."""
    from detzoo.engine.trainer import train as train_model

    source = cfg["runtime"].get("load_from")
    checkpoint = None if source is None or resume else read_detector(source)
    return train_model(cfg, work_dir=work_dir, resume=resume, overwrite=overwrite, load_from=checkpoint)
