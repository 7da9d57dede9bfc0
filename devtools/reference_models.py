"""The reference models detzoo is tested and benchmarked against (tests/ and benchmarks/
import them; a development tool, not part of the detzoo package, sdist or wheel).

torchvision: Faster, Mask and Keypoint R-CNN and RetinaNet R-50-FPN as torchvision's
``*_resnet50_fpn`` builders assemble them, from seeded random weights with frozen-BN
statistics calibrated on a test image (``torchvision_model``).

mmdetection 3.3, on the CPU, without mmcv's compiled ops: its own models built from the
config files it ships (``build_mmdet_model``), with seeded, well-conditioned weights
(``condition_weights``). mmcv-lite ships mmcv without its compiled extension ``mmcv._ext``,
which ``mmcv.ops`` (and so ``mmdet.models``) imports. ``install_ext_stand_in()`` registers a
stand-in module under that name whose ``nms`` and ``roi_align_forward`` compute with
torchvision.ops (the same arithmetic as mmcv's CPU kernels: greedy IoU suppression in score
order; average RoIAlign with bilinear sampling); any other op raises when called, so a
reference model that needs one fails loudly instead of computing something else.

``import_mmdet()`` returns the ``mmdet`` package (registered), or skips the calling test
when mmdetection is not installed (it is in the ``test`` extra).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import resnet50
from torchvision.models.detection import FasterRCNN, KeypointRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import nms as tv_nms
from torchvision.ops import roi_align as tv_roi_align
from torchvision.ops.feature_pyramid_network import LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d
from torchvision.transforms.functional import to_tensor

IMAGES = sorted((Path(__file__).resolve().parents[1] / "tests" / "data" / "coco" / "images").glob("*.jpg"))

# ---------------------------------------------------------------- torchvision

# torchvision class, its num_classes, detzoo config, scale of the class-score weights
# (random weights: scaled so that detections clear the 0.05 score threshold with scores
# spread over 0.1-0.3 or more, so that rounding does not decide their order)
TORCHVISION_FAMILIES = {
    "faster": (FasterRCNN, 91, "faster_rcnn_r50_fpn_1x_coco", 2.0),
    "mask": (MaskRCNN, 91, "mask_rcnn_r50_fpn_1x_coco", 2.0),
    "keypoint": (KeypointRCNN, 2, "keypoint_rcnn_r50_fpn_1x_coco", 1.0),
    "retinanet": (RetinaNet, 91, "retinanet_r50_fpn_1x_coco", 10.0),
}


def calibrate_statistics(norms: list[torch.nn.Module], forward) -> set[torch.nn.Module]:
    """Each of the ``norms``' running mean / variance := the per-channel statistics of its
    input during ``forward()`` (pre-hooks, no grad), so that activations keep their scale
    layer after layer as in a trained network: with random statistics they grow, and with
    them the float rounding of any two ways to compute the same network. Without norms
    nothing runs. Returns the norms that ``forward`` reached."""
    reached = set()

    def calibrate(module, inputs):
        module.running_mean.copy_(inputs[0].mean(dim=(0, 2, 3)))
        module.running_var.copy_(inputs[0].var(dim=(0, 2, 3)))
        reached.add(module)

    if not norms:
        return reached
    hooks = [m.register_forward_pre_hook(calibrate) for m in norms]
    try:
        with torch.no_grad():
            forward()
    finally:
        for h in hooks:
            h.remove()
    return reached


def calibrate_frozen_bn(model: torch.nn.Module, image: Path) -> None:
    """The frozen BNs' statistics calibrated on ``image`` (``calibrate_statistics``). They
    are all in the ResNet body, so the pass goes through the model's own transform and the
    body alone (the heads after it, e.g. the keypoint head's eight 512-channel convolutions
    on each detection, would change nothing)."""

    def forward():
        images, _ = model.transform([to_tensor(Image.open(image).convert("RGB"))])
        model.backbone.body(images.tensors)

    frozen = [m for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
    missed = len(frozen) - len(calibrate_statistics(frozen, forward))
    if missed:
        raise RuntimeError(f"{missed} frozen BNs are outside the backbone's body")


def torchvision_model(family: str, *, calibrated: bool = True) -> torch.nn.Module:
    """As torchvision's ``*_resnet50_fpn`` builders assemble them (RetinaNet: C3-C5, P6 / P7
    from P5), from a seeded random init with random frozen-BN weights and biases, and
    statistics calibrated on the first test image (``calibrate_frozen_bn``) unless not
    ``calibrated`` (for what does not depend on them, e.g. parameter counts)."""
    cls, num_classes, _, score_scale = TORCHVISION_FAMILIES[family]
    torch.manual_seed(0)
    body = resnet50(norm_layer=FrozenBatchNorm2d)
    if family == "retinanet":
        backbone = _resnet_fpn_extractor(body, 3, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256))
    else:
        backbone = _resnet_fpn_extractor(body, 3)
    model = cls(backbone, num_classes=num_classes)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, FrozenBatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
        if family == "retinanet":
            # torchvision's class 0 is a never-trained background channel, which the
            # converter drops: make it silent here as in a trained model
            logits = model.head.classification_head.cls_logits
            logits.weight.mul_(score_scale)
            logits.bias.uniform_(-5.0, -1.0)
            logits.weight.view(9, num_classes, -1)[:, 0] = 0.0
            logits.bias.view(9, num_classes)[:, 0] = -100.0
        else:
            model.roi_heads.box_predictor.cls_score.weight.mul_(score_scale)
    model.eval()
    if calibrated:
        calibrate_frozen_bn(model, IMAGES[0])
    return model


# ---------------------------------------------------------------- mmdetection

# detzoo config -> mmdetection's config of that row (tests/test_parity_mmdet.py)
MMDET_ROWS = {
    "retinanet_r50_nasfpn_crop640_50e_coco": "nas_fpn/retinanet_r50_nasfpn_crop640-50e_coco",
    "faster_rcnn_r50_fpg_crop640_50e_coco": "fpg/faster-rcnn_r50_fpg_crop640-50e_coco",
    "mask_rcnn_r50_fpg-chn128_crop640_50e_coco": "fpg/mask-rcnn_r50_fpg-chn128_crop640-50e_coco",
    "retinanet_r50_fpg_crop640_50e_coco": "fpg/retinanet_r50_fpg_crop640_50e_coco",
    "faster_rcnn_r50_fpn_gn_ws-all_1x_coco": "gn+ws/faster-rcnn_r50_fpn_gn-ws-all_1x_coco",
    "mask_rcnn_r50_fpn_gn_ws-all_20_23_24e_coco": "gn+ws/mask-rcnn_r50_fpn_gn-ws-all_20-23-24e_coco",
    # plain RetinaHead, P6 / P7 from C5 without ReLU (read from the config text in the checkpoint)
    "retinanet_r50_fpn_1x_coco": "retinanet/retinanet_r50_fpn_1x_coco",
}
MMDET_IMAGES = IMAGES[:2]  # the rows are compared on two: the suite stays fast


def _nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, offset: int = 0) -> torch.Tensor:
    if offset != 0:
        raise NotImplementedError("mmcv._ext stand-in: nms with offset=1 (legacy +1 box widths)")
    return tv_nms(boxes, scores, float(iou_threshold))


def _roi_align_forward(
    input, rois, output, argmax_y, argmax_x, *, aligned_height, aligned_width, spatial_scale,
    sampling_ratio, pool_mode, aligned
) -> None:
    if pool_mode != 1:  # mmcv: {'max': 0, 'avg': 1}
        raise NotImplementedError("mmcv._ext stand-in: RoIAlign max pooling")
    output.copy_(
        tv_roi_align(input, rois, (aligned_height, aligned_width), spatial_scale, sampling_ratio, aligned)
    )


class _StandIn(types.ModuleType):
    """``mmcv._ext``: the two ops above; every other name exists (mmcv checks them at
    import) but raises if a model calls it."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)

        def missing(*args, **kwargs):
            raise NotImplementedError(f"mmcv._ext stand-in has no {name}")

        return missing


def install_ext_stand_in() -> None:
    if "mmcv._ext" in sys.modules:
        return
    module = _StandIn("mmcv._ext")
    module.nms = _nms
    module.roi_align_forward = _roi_align_forward
    sys.modules["mmcv._ext"] = module


def import_mmdet():
    pytest.importorskip("mmcv")
    install_ext_stand_in()
    mmdet = pytest.importorskip("mmdet")
    from mmdet.utils import register_all_modules

    register_all_modules()
    return mmdet


def mmdet_config_path(name: str) -> Path:
    """The config file mmdetection ships for ``name`` (e.g. ``fpg/faster-rcnn_r50_fpg_crop640-50e_coco``)."""
    mmdet = import_mmdet()
    path = Path(mmdet.__file__).parent / ".mim" / "configs" / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(path)
    return path


def build_mmdet_model(name: str):
    """mmdetection's own model for its shipped config ``name``, with ``cfg`` attached as
    ``mmdet.apis.init_detector`` does (its pretrained-weight init is never run)."""
    import_mmdet()
    from mmengine.config import Config
    from mmdet.registry import MODELS

    cfg = Config.fromfile(mmdet_config_path(name))
    model = MODELS.build(cfg.model)
    model.cfg = cfg
    return model.eval()


@torch.no_grad()
def condition_weights(model: torch.nn.Module, calibration_image, *, seed: int = 0, cls_scale: float = 3.0,
                      retina_scale: float = 0.3, retina_prior: float = -2.5) -> None:
    """Seeded random weights that keep a deep detector well-conditioned, so that a correct
    port agrees to rounding and a wrong one does not:

    * convs and fcs: normal with variance 1 / fan-in (activations keep their scale); biases
      small; norm affine parameters random in [0.5, 1.5] / [-0.2, 0.2];
    * residual gains: the last norm of every ResNet block scaled to [0.1, 0.3], so rounding
      differences do not grow block after block;
    * BN running statistics: the per-channel mean / variance of their actual input on
      ``calibration_image`` (a pre-hook during one inference pass, none without BNs),
      i.e. non-trivial;
    * scores: the RoI classifier's weights times ``cls_scale`` and RetinaNet's class bias
      at ``retina_prior``, so that detections clear the 0.05 threshold; RetinaNet's class
      and box convs times ``retina_scale``, so that its scores stay below saturation
      (ties at 1.0 would make the order arbitrary) and its boxes near their anchors.
    """
    from mmdet.apis import inference_detector
    from mmdet.models.backbones.resnet import BasicBlock, Bottleneck

    g = torch.Generator().manual_seed(seed)
    norms = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.GroupNorm)
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)):
            fan_in = m.weight[0].numel() if not isinstance(m, torch.nn.ConvTranspose2d) else m.weight.shape[0]
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) / fan_in**0.5)
            if m.bias is not None:
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 0.2 - 0.1)
        elif isinstance(m, norms):
            m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 0.4 - 0.2)
    for m in model.modules():
        if isinstance(m, (Bottleneck, BasicBlock)):
            last = m.norm3 if isinstance(m, Bottleneck) else m.norm2
            last.weight.copy_(torch.rand(last.weight.shape, generator=g) * 0.2 + 0.1)
    roi_head = getattr(model, "roi_head", None)
    if roi_head is not None:
        roi_head.bbox_head.fc_cls.weight.mul_(cls_scale)
    bbox_head = getattr(model, "bbox_head", None)
    if bbox_head is not None:
        bbox_head.retina_cls.weight.mul_(retina_scale)
        bbox_head.retina_reg.weight.mul_(retina_scale)
        bbox_head.retina_cls.bias.fill_(retina_prior)

    calibrate_statistics([m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)],
                         lambda: inference_detector(model, calibration_image))


@torch.no_grad()
def mmdet_predict(model, images: list) -> list[dict]:
    """mmdetection's own inference (``mmdet.apis.inference_detector``: its test pipeline,
    data preprocessor and post-processing) on image paths: per image boxes, scores,
    labels (and masks) as numpy arrays, in original image pixels."""
    from mmdet.apis import inference_detector

    out = []
    for image in images:
        pred = inference_detector(model, str(image)).pred_instances
        item = {k: pred[k].numpy() for k in ("bboxes", "scores", "labels")}
        if "masks" in pred:
            item["masks"] = pred["masks"].numpy().astype(bool)
        out.append(item)
    return out


def save_mmdet_checkpoint(model, path, classes) -> None:
    """As mmengine's runner writes it: ``state_dict`` and ``meta`` with the dataset's class
    names and the config text."""
    torch.save(
        {"state_dict": model.state_dict(),
         "meta": {"dataset_meta": {"classes": tuple(classes)}, "cfg": model.cfg.pretty_text}},
        path,
    )


@torch.no_grad()
def mmdet_features(model, image) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The padded, normalised input mmdetection makes of an image path (its test pipeline
    and data preprocessor) and its backbone + neck features on it, bottom level first."""
    from mmcv.transforms import Compose
    from mmdet.apis.inference import get_test_pipeline_cfg

    data = Compose(get_test_pipeline_cfg(model.cfg.copy()))(dict(img_path=str(image), img_id=0))
    batch = model.data_preprocessor({"inputs": [data["inputs"]], "data_samples": [data["data_samples"]]}, False)
    return batch["inputs"], list(model.extract_feat(batch["inputs"]))


def converted_neck_state(reference_neck: torch.nn.Module) -> dict[str, torch.Tensor]:
    """An mmdetection neck's state dict through detzoo's mmdet converter (its keys
    prefixed with ``neck.`` as in a whole detector, then stripped)."""
    from detzoo.zoo.converters.mmdet import rename_all

    renamed = rename_all({f"neck.{k}": v for k, v in reference_neck.state_dict().items()})
    return {k[len("neck."):]: v for k, v in renamed.items()}


def calibration_image(folder: Path) -> str:
    """A synthetic 480 x 640 picture with the 1/f amplitude spectrum of natural images
    (seeded noise shaped in the Fourier domain), written in ``folder``, so that norm
    statistics calibrated on it fit real photographs; not one of the test images."""
    import cv2

    g = np.random.default_rng(0)
    fy, fx = np.meshgrid(np.fft.fftfreq(480), np.fft.rfftfreq(640), indexing="ij")
    amplitude = 1.0 / np.maximum(np.hypot(fx, fy), 1.0 / 640)
    channels = []
    for _ in range(3):
        spectrum = amplitude * np.exp(2j * np.pi * g.random(amplitude.shape))
        x = np.fft.irfft2(spectrum, s=(480, 640))
        channels.append(127 + 60 * (x - x.mean()) / x.std())
    path = folder / "calibration.png"
    cv2.imwrite(str(path), np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8))
    return str(path)


def conditioned_mmdet_model(name: str, folder: Path):
    """mmdetection's model of its config ``name`` (``build_mmdet_model``), seeded, with
    ``condition_weights`` calibrated on ``calibration_image`` (written in ``folder``)."""
    torch.manual_seed(0)
    model = build_mmdet_model(name)
    condition_weights(model, calibration_image(folder))
    return model


def coco_classes() -> tuple[str, ...]:
    """mmdetection's COCO class names."""
    from mmdet.datasets import CocoDataset

    return CocoDataset.METAINFO["classes"]
