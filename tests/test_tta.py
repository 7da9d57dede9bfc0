"""Test-time augmentation (detzoo.engine.tta) on the one inference path
(detzoo.engine.inference): at the test scale alone it is the plain test, to the bit;
multi-scale + flip gives valid detections; flipping the image mirrors the result."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from detzoo.api import build_detector
from detzoo.cli import main
from detzoo.config import ConfigError, apply_overrides, load_config
from detzoo.data.images import read_image
from detzoo.data.synthetic import data_overrides
from detzoo.data.transforms import hflip_instances
from detzoo.engine import tta as tta_module
from detzoo.engine.checkpoint import save_checkpoint
from detzoo.engine.inference import predict_images
from detzoo.engine.tta import build_tta
from detzoo.structures import Instances

TESTS = Path(__file__).parent
IMAGE = TESTS / "data" / "coco" / "images" / "000000000338.jpg"  # 640 x 327
FIELDS = ("boxes", "scores", "labels", "masks")


def detector(config: str | Path, *overrides: str):
    """The detector of ``config`` with seeded random weights made to detect: peaked class
    scores (box classifier weights x5: scores spread over (0.05, 1) without ties)
    and mask logits spread far from 0 (x1000), so that thresholding at 0.5 is stable."""
    cfg = apply_overrides(load_config(config), list(overrides))
    torch.manual_seed(0)
    det = build_detector(cfg, {}).eval()
    model = det.model
    with torch.no_grad():
        if model.roi_heads is not None:
            model.roi_heads.predictor.cls_score.weight.mul_(5.0)
            if model.roi_heads.mask is not None:
                model.roi_heads.mask.head.predictor.weight.mul_(1000.0)
        else:  # RetinaNet: its std-0.01 towers pass ~1e-3 of the signal; give them fan-in variance
            head = model.dense_head.head
            for conv in [c[0] for c in head.cls_convs] + [head.cls_logits]:
                nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            head.cls_logits.bias.fill_(-2.0)
    return det


def mask_rcnn(*overrides: str):
    return detector(TESTS / "configs" / "tiny_mask_rcnn.py", "data.test_scale=128", "data.max_size=256", *overrides)


def fast_rcnn(*overrides: str):
    """tiny_fast_rcnn with 300 random proposals in the pixels of IMAGE."""
    det = detector(TESTS / "configs" / "tiny_fast_rcnn.py", "data.test_scale=128", "data.max_size=256", *overrides)
    generator = torch.Generator().manual_seed(0)
    xy = torch.rand(300, 2, generator=generator) * torch.tensor([600.0, 290.0])
    wh = torch.rand(300, 2, generator=generator) * 120 + 8
    return det, Instances(boxes=torch.cat([xy, xy + wh], 1), labels=torch.zeros(300, dtype=torch.int64))


def retinanet(*overrides: str):
    """retinanet_r50_fpn_1x_coco at R-18 structure, 1/8 width, 32 channels, 3 classes."""
    backbone = dict(load_config("retinanet_r50_fpn_1x_coco")["model"]["backbone"], depth=18, stem_width=8)
    return detector("retinanet_r50_fpn_1x_coco", f"model.backbone={backbone!r}", "model.neck.out_channels=32",
                    "model.dense_head.head.conv_dim=32", "model.dense_head.head.num_convs=2",
                    "model.dense_head.num_classes=3", "data.test_scale=128", "data.max_size=256", *overrides)


def tta_set(scales, max_size: int, flip: bool) -> list[str]:
    return [f"data.test_time_aug.scales={scales}", f"data.test_time_aug.max_size={max_size}",
            f"data.test_time_aug.flip={flip}"]


@pytest.mark.parametrize("scales", [[128], [128, 128]], ids=["test scale", "test scale twice"])
def test_tta_at_the_test_scale_is_the_plain_test(scales):
    """One augmentation = the test transform: boxes, scores, labels and pasted masks equal
    to the bit; the same scale twice pools every detection twice and NMS keeps one."""
    det = mask_rcnn(*tta_set(scales, 256, False))
    plain = det.predict(str(IMAGE))[0]
    tta = det.predict(str(IMAGE), tta=True)[0]
    assert len(plain["scores"]) == 100 and plain["masks"].sum() > 0
    for field in FIELDS:
        assert np.array_equal(plain[field], tta[field]), field


def test_tta_mask_probabilities_at_the_test_scale_are_the_plain_tests(monkeypatch):
    """Before thresholding too: a detection keeps, in the view that found it, the box it
    predicted there (mapping it to the original image and back moves it by ~1e-5 px, which
    changes the probabilities by ~1e-5)."""
    det = mask_rcnn(*tta_set([128], 256, False))
    image = read_image(IMAGE)
    with torch.no_grad():
        batch = det.model.preprocess([det.transform(image)[0]], [tuple(image.shape[-2:])])
        (plain,), _ = det.model.detect(batch)
    averaged = []
    paste = tta_module.postprocess
    monkeypatch.setattr(tta_module, "postprocess", lambda r, *args: averaged.append(r) or paste(r, *args))
    build_tta(det.config["data"], det.model)(det.model, image)
    assert torch.equal(averaged[0].masks, plain.masks)


def test_tta_without_detections_gives_empty_results():
    det = mask_rcnn(*tta_set([96, 128], 256, True), "model.roi_heads.score_thresh=1.0")
    pred = det.predict(str(IMAGE), tta=True)[0]
    assert pred["boxes"].shape == (0, 4) and pred["masks"].shape == (0, 327, 640)


@pytest.mark.parametrize("kind", ["retinanet_mmdet_resize", "fast_rcnn"])
def test_tta_at_the_test_scale_is_the_plain_test_for_retinanet_and_fast_rcnn(kind):
    """RetinaNet (no RoI heads) with mmdetection's resize convention, and Fast R-CNN with
    proposals that follow the image through the augmentation."""
    image = read_image(IMAGE)
    if kind == "fast_rcnn":
        det, proposals = fast_rcnn(*tta_set([128], 256, False))
        proposals = [proposals]
    else:
        det, proposals = retinanet("data.resize='mmdet'", *tta_set([128], 256, False)), None
    plain = predict_images(det.model, [image], transform=det.transform, proposals=proposals)[0]
    tta = build_tta(det.config["data"], det.model)
    augmented = predict_images(det.model, [image], transform=det.transform, proposals=proposals, tta=tta)[0]
    assert len(plain) > 10
    for field in ("boxes", "scores", "labels"):
        assert torch.equal(getattr(plain, field), getattr(augmented, field)), field


def test_multi_scale_flip_tta_gives_valid_detections():
    cap = 20
    det = mask_rcnn(*tta_set([96, 128, 160], 256, True), f"model.roi_heads.detections_per_image={cap}")
    image = read_image(IMAGE)
    h, w = image.shape[-2:]
    pred = det.predict(str(IMAGE), tta=True)[0]
    boxes, scores = pred["boxes"], pred["scores"]
    assert len(scores) == cap  # the pool of 6 views x 20 detections is cut to the model's cap
    assert (boxes[:, :2] >= -1e-3).all() and (boxes[:, 2] <= w + 1e-3).all() and (boxes[:, 3] <= h + 1e-3).all()
    assert (boxes[:, 2:] >= boxes[:, :2]).all()
    assert (scores > 0).all() and (scores <= 1).all() and (np.diff(scores) <= 0).all()
    assert set(pred["labels"]) <= {0, 1, 2}
    assert pred["masks"].shape == (cap, h, w) and pred["masks"].dtype == bool and pred["masks"].any()
    plain = det.predict(str(IMAGE))[0]
    assert not np.array_equal(plain["scores"], scores)  # the other scales found other detections

    voted = mask_rcnn(*tta_set([96, 128, 160], 256, True), f"model.roi_heads.detections_per_image={cap}",
                      "data.test_time_aug.vote_thresh=0.6").predict(str(IMAGE), tta=True)[0]
    assert np.array_equal(voted["scores"], scores) and np.array_equal(voted["labels"], pred["labels"])
    moved = np.abs(voted["boxes"] - boxes).max(1) > 1e-3
    assert 0 < moved.sum() < cap  # some boxes had votes from other views, the others kept their place


@pytest.mark.parametrize("kind", ["mask_rcnn", "fast_rcnn"])
def test_tta_of_the_mirrored_image_is_the_mirrored_tta(kind):
    """At the image's own size (the resize is the identity, so mirroring commutes with it)
    the views of the mirrored image are the views of the image, swapped: the merged
    detections mirror each other, up to the rounding of mirroring twice. Fast R-CNN: the
    proposals are mirrored with the image."""
    image = read_image(IMAGE)
    h, w = image.shape[-2:]
    if kind == "fast_rcnn":
        det, proposals = fast_rcnn(*tta_set([h], w, True))
        proposals, mirrored_proposals = [proposals], [hflip_instances(proposals, w)]
    else:
        det, proposals, mirrored_proposals = mask_rcnn(*tta_set([h], w, True)), None, None
    tta = build_tta(det.config["data"], det.model)
    a = predict_images(det.model, [image], transform=det.transform, proposals=proposals, tta=tta)[0]
    b = predict_images(det.model, [image.flip(-1)], transform=det.transform, proposals=mirrored_proposals, tta=tta)[0]
    b = hflip_instances(b, w)
    assert len(a) == len(b) > 10
    assert torch.equal(a.labels, b.labels)
    assert torch.allclose(a.scores, b.scores, rtol=0, atol=1e-5)
    assert torch.allclose(a.boxes, b.boxes, rtol=0, atol=1e-3)
    if kind == "mask_rcnn":
        assert (a.masks != b.masks).sum() <= 1e-3 * a.masks.sum()


def test_box_voting_averages_the_class_boxes_that_overlap():
    pool = Instances(
        boxes=torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 11], [0, 0, 10, 20], [0, 0, 10, 10], [5, 5, 5, 5]]),
        labels=torch.tensor([0, 0, 0, 1, 0]),
        scores=torch.tensor([0.9, 0.3, 0.8, 0.7, 0.5]),
    )
    voted = tta_module.box_voting(pool[[0, 4]], pool, 0.8)
    # box 1 (IoU 0.91) votes with weight 0.3; box 2 (IoU 0.5) and box 3 (other class) do not;
    # the zero-area box 4 has no IoU with anything and stays
    expected_y2 = (0.9 * 10 + 0.3 * 11) / 1.2
    assert torch.allclose(voted, torch.tensor([[0.0, 0, 10, expected_y2], [5, 5, 5, 5]]))


def test_tta_refuses_keypoint_and_rpn_models_and_bad_settings():
    for name in ("tiny_keypoint_rcnn", "tiny_rpn"):
        det = build_detector(load_config(TESTS / "configs" / f"{name}.py"), {})
        with pytest.raises(ValueError, match="test-time augmentation merges boxes and masks"):
            build_tta(det.config["data"], det.model)
    det = mask_rcnn()
    for key, value, message in (("scales", "[]", "scales must be a non-empty list"),
                                ("vote_thresh", "1.5", r"vote_thresh must be None or an IoU in \(0, 1\]")):
        data = apply_overrides(det.config, [f"data.test_time_aug.{key}={value}"])["data"]
        with pytest.raises(ConfigError, match=message):
            build_tta(data, det.model)
    with pytest.raises(ConfigError, match=r"data\.test_time_aug\.flips.*did you mean 'flip'"):
        build_tta(dict(det.config["data"], test_time_aug=dict(det.config["data"]["test_time_aug"], flips=True)),
                  det.model)


def test_cli_test_tta(synth_data, tmp_path, capsys):
    """``detzoo test --tta`` end to end: at the test scale alone the results file equals the
    plain test's; multi-scale + flip evaluates boxes and masks; bad settings are one line."""
    config = TESTS / "configs" / "tiny_mask_rcnn.py"
    ckpt = tmp_path / "model.pth"
    save_checkpoint(ckpt, {"model": detector(config).model.state_dict()})
    overrides = [*data_overrides(synth_data), "model.roi_heads.detections_per_image=20"]
    sets = [arg for o in overrides for arg in ("--set", o)]

    def test(*extra: str) -> list[dict]:
        out = tmp_path / "results.json"
        assert main(["test", str(config), str(ckpt), "--out", str(out), *sets, *extra]) == 0
        return json.loads(out.read_text())

    plain = test()
    assert plain and all("segmentation" in d for d in plain)
    one_scale = [arg for o in tta_set([64], 64, False) for arg in ("--set", o)]
    assert test("--tta", *one_scale) == plain
    full = [arg for o in tta_set([48, 64, 80], 128, True) for arg in ("--set", o)]
    augmented = test("--tta", *full)
    assert augmented and augmented != plain and all("segmentation" in d for d in augmented)
    assert "bbox" in capsys.readouterr().out

    assert main(["test", str(config), str(ckpt), "--tta", *sets, "--set", "data.test_time_aug.scales=[]"]) == 2
    assert "detzoo test: error: data.test_time_aug.scales must be a non-empty list" in capsys.readouterr().err
