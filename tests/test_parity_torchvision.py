"""detzoo reproduces torchvision's Faster R-CNN R-50-FPN through `detzoo convert`.

torchvision's model is built as its pretrained one is (frozen BN, ResNet-50-FPN, 91
classes) from a seeded random init with random BN statistics; detzoo gets its weights only
through the converter and its conventions only through the converted checkpoint's meta."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import resnet50
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops.misc import FrozenBatchNorm2d
from torchvision.transforms.functional import to_tensor

import detzoo
from detzoo.cli import main

IMAGES = sorted((Path(__file__).parent / "data" / "coco" / "images").glob("*.jpg"))


@pytest.fixture(scope="module")
def torchvision_model(tmp_path_factory):
    torch.manual_seed(0)
    model = FasterRCNN(_resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), 3), num_classes=91)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, FrozenBatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        # scaled so that random-weight detections clear the 0.05 score threshold
        model.roi_heads.box_predictor.cls_score.weight.mul_(2.0)
    path = tmp_path_factory.mktemp("tv") / "fasterrcnn_resnet50_fpn.pth"
    torch.save(model.state_dict(), path)
    return model.eval(), path


def test_converted_checkpoint_reproduces_torchvision(torchvision_model, tmp_path):
    model, src = torchvision_model
    dst = tmp_path / "converted.pth"
    assert main(["convert", "--from", "torchvision", str(src), "--config", "faster_rcnn_r50_fpn_1x_coco",
                 "--out", str(dst)]) == 0
    detector = detzoo.load_model("faster_rcnn_r50_fpn_1x_coco", checkpoint=dst)
    predictions = detector.predict(IMAGES)
    for path, ours in zip(IMAGES, predictions):
        with torch.no_grad():
            ref = model([to_tensor(Image.open(path).convert("RGB"))])[0]
        assert len(ref["boxes"]) >= 5, "too few detections for a meaningful comparison"
        assert len(ours["boxes"]) == len(ref["boxes"]), path.name
        np.testing.assert_array_equal(ours["labels"] + 1, ref["labels"].numpy())  # background moved last
        np.testing.assert_allclose(ours["boxes"], ref["boxes"].numpy(), rtol=0, atol=1e-3)
        np.testing.assert_allclose(ours["scores"], ref["scores"].numpy(), rtol=0, atol=1e-4)
        names = [detector.class_names[i] for i in ours["labels"]]
        assert ours["class_names"] == names and all(isinstance(n, str) for n in names)


def test_converter_rejects_other_checkpoints(tmp_path):
    src = tmp_path / "not_faster_rcnn.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, src)
    assert main(["convert", "--from", "torchvision", str(src), "--config", "faster_rcnn_r50_fpn_1x_coco",
                 "--out", str(tmp_path / "x.pth")]) == 2
    assert not (tmp_path / "x.pth").exists()
