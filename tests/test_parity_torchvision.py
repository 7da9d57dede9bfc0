"""detzoo reproduces torchvision's Faster, Mask and Keypoint R-CNN R-50-FPN through
`detzoo convert`.

Each torchvision model is built as its pretrained one is (frozen BN, ResNet-50-FPN) from a
seeded random init with random BN statistics; detzoo gets its weights only through the
converter and its conventions only through the converted checkpoint's meta."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import resnet50
from torchvision.models.detection import FasterRCNN, KeypointRCNN, MaskRCNN
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops.misc import FrozenBatchNorm2d
from torchvision.transforms.functional import to_tensor

import detzoo
from detzoo.cli import main

IMAGES = sorted((Path(__file__).parent / "data" / "coco" / "images").glob("*.jpg"))

# torchvision class, its num_classes, detzoo config, scale of the class-score weights
# (random weights: scaled so that detections clear the 0.05 score threshold)
FAMILIES = {
    "faster": (FasterRCNN, 91, "faster_rcnn_r50_fpn_1x_coco", 2.0),
    "mask": (MaskRCNN, 91, "mask_rcnn_r50_fpn_1x_coco", 2.0),
    "keypoint": (KeypointRCNN, 2, "keypoint_rcnn_r50_fpn_1x_coco", 1e-4),
}


def torchvision_model(family: str) -> torch.nn.Module:
    cls, num_classes, _, score_scale = FAMILIES[family]
    torch.manual_seed(0)
    model = cls(_resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), 3), num_classes=num_classes)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, FrozenBatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        model.roi_heads.box_predictor.cls_score.weight.mul_(score_scale)
    return model.eval()


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
        total += len(ref["boxes"])
        assert len(ours["boxes"]) == len(ref["boxes"]), path.name
        np.testing.assert_array_equal(ours["labels"] + 1, ref["labels"].numpy())  # background moved last
        np.testing.assert_allclose(ours["boxes"], ref["boxes"].numpy(), rtol=0, atol=1e-3)
        np.testing.assert_allclose(ours["scores"], ref["scores"].numpy(), rtol=0, atol=1e-4)
        assert ours["class_names"] == [detector.class_names[i] for i in ours["labels"]]
        if family == "mask":
            theirs = ref["masks"][:, 0].numpy() > 0.5
            assert ours["masks"].dtype == bool and ours["masks"].shape == theirs.shape
            inter = (ours["masks"] & theirs).sum((1, 2))
            union = (ours["masks"] | theirs).sum((1, 2))
            assert (np.where(union == 0, 1.0, inter / np.maximum(union, 1)) >= 0.999).all()
        if family == "keypoint":
            assert ours["keypoints"].shape == (len(ref["boxes"]), 17, 3)
            np.testing.assert_allclose(ours["keypoints"][..., :2], ref["keypoints"][..., :2].numpy(), rtol=0, atol=1e-2)
            np.testing.assert_allclose(ours["keypoints"][..., 2], ref["keypoints_scores"].numpy(), rtol=0, atol=1e-4)
    assert total >= 10, "too few detections for a meaningful comparison"


def test_parameter_counts_equal_torchvision():
    """41.8M / 44.4M / 59.1M with 91 classes (2 for keypoints); detzoo's predictor has no
    background box deltas (and no background mask logits), 4 x 1025 (+ 257) fewer."""
    for family, (_, num_classes, config, _) in FAMILIES.items():
        ours = detzoo.load_model(config, overrides=[f"model.roi_heads.num_classes={num_classes - 1}"])
        theirs = torchvision_model(family)
        background = 4 * 1025 + (257 if family == "mask" else 0)
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        assert count(ours.model) == count(theirs) - background, family
        assert round(count(theirs) / 1e6, 1) == {"faster": 41.8, "mask": 44.4, "keypoint": 59.1}[family]


def test_converter_rejects_other_checkpoints(tmp_path):
    src = tmp_path / "not_faster_rcnn.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, src)
    assert main(["convert", "--from", "torchvision", str(src), "--config", "faster_rcnn_r50_fpn_1x_coco",
                 "--out", str(tmp_path / "x.pth")]) == 2
    assert not (tmp_path / "x.pth").exists()
