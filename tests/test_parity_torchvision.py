"""detzoo reproduces torchvision's Faster, Mask and Keypoint R-CNN and RetinaNet R-50-FPN
through `detzoo convert`.

Each torchvision model is built as its pretrained one is (frozen BN, ResNet-50-FPN) from a
seeded random init with random BN weights; detzoo gets its weights only through the
converter and its conventions only through the converted checkpoint's meta.

The two compute the same network in different orders (detzoo folds frozen BN into the
convolutions and runs channels-last), so they agree to float rounding, about 1e-5 of a
coordinate: detections are compared as ``detections.assert_same_detections`` says. The
torchvision models are built by devtools/reference_models.py."""

import pytest
import torch
from PIL import Image
from torchvision.transforms.functional import to_tensor

import detzoo
from detzoo.cli import main
from devtools.reference_models import IMAGES, TORCHVISION_FAMILIES, torchvision_model

from detections import assert_same_detections


# Keypoint R-CNN's head runs eight 3x3 512-channel convolutions on each detection's 14 x 14
# features, 7.4 GFLOPs a detection: both sides keep their best 25 per image instead of 100,
# which leaves that test a quarter of its time
DETECTIONS = {"keypoint": 25}


@pytest.mark.parametrize("family", list(TORCHVISION_FAMILIES))
def test_converted_checkpoint_reproduces_torchvision(family, tmp_path):
    model = torchvision_model(family)
    src, dst = tmp_path / "torchvision.pth", tmp_path / "converted.pth"
    torch.save(model.state_dict(), src)
    config = TORCHVISION_FAMILIES[family][2]
    assert main(["convert", "--from", "torchvision", str(src), "--config", config, "--out", str(dst)]) == 0
    overrides = []
    if family in DETECTIONS:
        model.roi_heads.detections_per_img = DETECTIONS[family]
        overrides = [f"model.roi_heads.detections_per_image={DETECTIONS[family]}"]
    detector = detzoo.load_model(config, checkpoint=dst, overrides=overrides)
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
    for family, (_, num_classes, config, _) in TORCHVISION_FAMILIES.items():
        if family == "retinanet":  # torchvision's P6 is made from P5, not C5
            overrides = [f"model.dense_head.num_classes={num_classes - 1}", "model.neck.top_block.in_feature='p5'"]
        else:
            overrides = [f"model.roi_heads.num_classes={num_classes - 1}"]
        ours = detzoo.load_model(config, overrides=overrides)
        theirs = torchvision_model(family, calibrated=False)
        background = {"faster": 4 * 1025, "mask": 4 * 1025 + 257, "keypoint": 4 * 1025, "retinanet": 9 * 2305}[family]
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        assert count(ours.model) == count(theirs) - background, family
        millions = {"faster": 41.8, "mask": 44.4, "keypoint": 59.1, "retinanet": 34.0}[family]
        assert round(count(theirs) / 1e6, 1) == millions


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
