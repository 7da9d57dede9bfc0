"""detzoo reproduces torchvision's Faster, Mask and Keypoint R-CNN and RetinaNet R-50-FPN
through `detzoo convert`.

Each torchvision model is built as its pretrained one is (frozen BN, ResNet-50-FPN) from a
seeded random init with random BN weights; detzoo gets its weights only through the
converter and its conventions only through the converted checkpoint's meta.

The two compute the same network in different orders (detzoo folds frozen BN into the
convolutions and runs channels-last), so they agree to float rounding, about 1e-5 of a
coordinate: detections are compared as ``detections.assert_same_detections`` says."""

from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.models import resnet50
from torchvision.models.detection import FasterRCNN, KeypointRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops.feature_pyramid_network import LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d
from torchvision.transforms.functional import to_tensor

import detzoo
from detzoo.cli import main

from detections import assert_same_detections

IMAGES = sorted((Path(__file__).parent / "data" / "coco" / "images").glob("*.jpg"))

# torchvision class, its num_classes, detzoo config, scale of the class-score weights
# (random weights: scaled so that detections clear the 0.05 score threshold with scores
# spread over 0.1-0.3 or more, so that rounding does not decide their order)
FAMILIES = {
    "faster": (FasterRCNN, 91, "faster_rcnn_r50_fpn_1x_coco", 2.0),
    "mask": (MaskRCNN, 91, "mask_rcnn_r50_fpn_1x_coco", 2.0),
    "keypoint": (KeypointRCNN, 2, "keypoint_rcnn_r50_fpn_1x_coco", 1.0),
    "retinanet": (RetinaNet, 91, "retinanet_r50_fpn_1x_coco", 10.0),
}


def calibrate_frozen_bn(model: torch.nn.Module, image: Path) -> None:
    """Each frozen BN's running mean / variance := the per-channel statistics of its input
    on ``image`` (one pass with pre-hooks), so that activations keep their scale layer
    after layer as in a trained network. With random statistics they grow, and with them
    the float rounding of any two ways to compute the same network."""

    def calibrate(module, inputs):
        module.running_mean.copy_(inputs[0].mean(dim=(0, 2, 3)))
        module.running_var.copy_(inputs[0].var(dim=(0, 2, 3)))

    hooks = [m.register_forward_pre_hook(calibrate) for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
    try:
        with torch.no_grad():
            model([to_tensor(Image.open(image).convert("RGB"))])
    finally:
        for h in hooks:
            h.remove()


def torchvision_model(family: str) -> torch.nn.Module:
    """As torchvision's ``*_resnet50_fpn`` builders assemble them (RetinaNet: C3-C5, P6 / P7
    from P5), from a seeded random init with random frozen-BN weights and biases, and
    statistics calibrated on the first test image (``calibrate_frozen_bn``)."""
    cls, num_classes, _, score_scale = FAMILIES[family]
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
    calibrate_frozen_bn(model, IMAGES[0])
    return model


@pytest.mark.parametrize("family", list(FAMILIES))
def test_converted_checkpoint_reproduces_torchvision(family, tmp_path):
    model = torchvision_model(family)
    src, dst = tmp_path / "torchvision.pth", tmp_path / "converted.pth"
    torch.save(model.state_dict(), src)
    config = FAMILIES[family][2]
    assert main(["convert", "--from", "torchvision", str(src), "--config", config, "--out", str(dst)]) == 0
    detector = detzoo.load_model(config, checkpoint=dst)
    total = 0
    for path, ours in zip(IMAGES, detector.predict(IMAGES)):
        with torch.no_grad():
            ref = model([to_tensor(Image.open(path).convert("RGB"))])[0]
        assert ours["class_names"] == [detector.class_names[i] for i in ours["labels"]]
        theirs = {  # background moved last / dropped: torchvision's label - 1 is detzoo's
            "boxes": ref["boxes"].numpy(), "scores": ref["scores"].numpy(), "labels": ref["labels"].numpy() - 1
        }
        if family == "mask":
            theirs["masks"] = ref["masks"][:, 0].numpy() > 0.5
        if family == "keypoint":
            theirs["keypoints"] = torch.cat([ref["keypoints"][..., :2], ref["keypoints_scores"][..., None]], -1).numpy()
        total += assert_same_detections({k: v for k, v in ours.items() if k != "class_names"}, theirs)
    assert total >= 10, "too few detections for a meaningful comparison"


def test_parameter_counts_equal_torchvision():
    """41.8M / 44.4M / 59.1M / 34.0M with 91 classes (2 for keypoints); detzoo's predictors
    have no background box deltas (and no background mask logits), 4 x 1025 (+ 257) fewer;
    its RetinaNet no background channel, 9 x (256 x 9 + 1) fewer."""
    for family, (_, num_classes, config, _) in FAMILIES.items():
        if family == "retinanet":  # torchvision's P6 is made from P5, not C5
            overrides = [f"model.dense_head.num_classes={num_classes - 1}", "model.neck.top_block.in_feature='p5'"]
        else:
            overrides = [f"model.roi_heads.num_classes={num_classes - 1}"]
        ours = detzoo.load_model(config, overrides=overrides)
        theirs = torchvision_model(family)
        background = {"faster": 4 * 1025, "mask": 4 * 1025 + 257, "keypoint": 4 * 1025, "retinanet": 9 * 2305}[family]
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        assert count(ours.model) == count(theirs) - background, family
        assert round(count(theirs) / 1e6, 1) == {"faster": 41.8, "mask": 44.4, "keypoint": 59.1, "retinanet": 34.0}[family]


def test_converter_rejects_other_checkpoints(tmp_path):
    src = tmp_path / "not_faster_rcnn.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, src)
    assert main(["convert", "--from", "torchvision", str(src), "--config", "faster_rcnn_r50_fpn_1x_coco",
                 "--out", str(tmp_path / "x.pth")]) == 2
    assert not (tmp_path / "x.pth").exists()


def test_retinanet_training_losses_equal_torchvision(tmp_path):
    """Focal and L1 losses of one training image with three objects, through the same
    converted weights: anchor matching, targets and normalisation as torchvision's."""
    from detzoo.structures import Instances

    model = torchvision_model("retinanet")
    src, dst = tmp_path / "torchvision.pth", tmp_path / "converted.pth"
    torch.save(model.state_dict(), src)
    assert main(["convert", "--from", "torchvision", str(src), "--config", "retinanet_r50_fpn_1x_coco",
                 "--out", str(dst)]) == 0
    detector = detzoo.load_model("retinanet_r50_fpn_1x_coco", checkpoint=dst)
    image = to_tensor(Image.open(IMAGES[0]).convert("RGB"))
    boxes = torch.tensor([[10.0, 20.0, 200.0, 300.0], [300.0, 50.0, 500.0, 250.0], [100.0, 100.0, 140.0, 160.0]])
    labels = torch.tensor([5, 17, 1])
    model.train()
    detector.model.train()
    with torch.no_grad():
        theirs = model([image], [{"boxes": boxes, "labels": labels}])
        resized = detector.transform(image * 255)[0]
        scale = torch.tensor([resized.shape[-1] / image.shape[-1], resized.shape[-2] / image.shape[-2]] * 2)
        ours = detector.model([resized], [Instances(boxes=boxes * scale, labels=labels - 1)])
    torch.testing.assert_close(ours["loss_retina_cls"], theirs["classification"], rtol=1e-5, atol=0)
    torch.testing.assert_close(ours["loss_retina_box"], theirs["bbox_regression"], rtol=1e-5, atol=0)
