"""detzoo reproduces mmdetection 3.3's own models through `detzoo convert --from mmdet`.

For each row, mmdetection builds its model from the config file it ships, with seeded,
well-conditioned random weights and BN statistics calibrated on a synthetic image
(tests/mmdet_reference.py), and runs its own inference (test pipeline, preprocessing,
post-processing) on two real COCO images. The checkpoint, saved as mmengine saves one, goes
through the converter into the detzoo config of the same name; detzoo must return the
same detections: same count and labels, boxes within 1e-2 px, scores within 1e-3, masks
with IoU >= 0.99.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

import detzoo
from detzoo.cli import main

from detections import assert_same_detections

from mmdet_reference import (
    build_mmdet_model,
    condition_weights,
    import_mmdet,
    mmdet_features,
    mmdet_predict,
    save_mmdet_checkpoint,
)

IMAGES = sorted((Path(__file__).parent / "data" / "coco" / "images").glob("*.jpg"))[:2]  # two: the suite stays fast

# detzoo config -> mmdetection's config of that row
ROWS = {
    "retinanet_r50_nasfpn_crop640_50e_coco": "nas_fpn/retinanet_r50_nasfpn_crop640-50e_coco",
    "faster_rcnn_r50_fpg_crop640_50e_coco": "fpg/faster-rcnn_r50_fpg_crop640-50e_coco",
    "mask_rcnn_r50_fpg-chn128_crop640_50e_coco": "fpg/mask-rcnn_r50_fpg-chn128_crop640-50e_coco",
    "retinanet_r50_fpg_crop640_50e_coco": "fpg/retinanet_r50_fpg_crop640_50e_coco",
    "faster_rcnn_r50_fpn_gn_ws-all_1x_coco": "gn+ws/faster-rcnn_r50_fpn_gn-ws-all_1x_coco",
    "mask_rcnn_r50_fpn_gn_ws-all_20_23_24e_coco": "gn+ws/mask-rcnn_r50_fpn_gn-ws-all_20-23-24e_coco",
    # plain RetinaHead, P6 / P7 from C5 without ReLU (read from the config text in the checkpoint)
    "retinanet_r50_fpn_1x_coco": "retinanet/retinanet_r50_fpn_1x_coco",
}


def calibration_image(tmp_path: Path) -> str:
    """A synthetic 480 x 640 picture with the 1/f amplitude spectrum of natural images
    (seeded noise shaped in the Fourier domain), so that norm statistics calibrated on it
    fit real photographs; not one of the test images."""
    import cv2

    g = np.random.default_rng(0)
    fy, fx = np.meshgrid(np.fft.fftfreq(480), np.fft.rfftfreq(640), indexing="ij")
    amplitude = 1.0 / np.maximum(np.hypot(fx, fy), 1.0 / 640)
    channels = []
    for _ in range(3):
        spectrum = amplitude * np.exp(2j * np.pi * g.random(amplitude.shape))
        x = np.fft.irfft2(spectrum, s=(480, 640))
        channels.append(127 + 60 * (x - x.mean()) / x.std())
    path = tmp_path / "calibration.png"
    cv2.imwrite(str(path), np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8))
    return str(path)


@pytest.mark.parametrize("config", list(ROWS))
def test_converted_mmdet_checkpoint_reproduces_mmdetection(config, tmp_path):
    import_mmdet()
    torch.manual_seed(0)
    reference = build_mmdet_model(ROWS[config])
    condition_weights(reference, calibration_image(tmp_path))
    classes = reference.cfg.get("metainfo", {}).get("classes") or _coco_classes()
    src, dst = tmp_path / "mmdet.pth", tmp_path / "converted.pth"
    save_mmdet_checkpoint(reference, src, classes)
    assert main(["convert", "--from", "mmdet", str(src), "--config", config, "--out", str(dst)]) == 0

    detector = detzoo.load_model(config, checkpoint=dst)
    # every pyramid level, also those no top-100 detection comes from (e.g. P7)
    inputs, theirs = mmdet_features(reference, IMAGES[0])
    with torch.no_grad():
        ours = detector.model.neck(detector.model.backbone(inputs))
    assert len(ours) == len(theirs)
    for level, (a, b) in enumerate(zip(ours.values(), theirs)):
        # float rounding through ~60 layers, BN folded into the convolutions: 1e-4 of the largest value
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4 * b.abs().max().item(), msg=f"level {level}")
    total = 0
    for ours, theirs in zip(detector.predict(IMAGES), mmdet_predict(reference, IMAGES)):
        theirs = {"boxes": theirs["bboxes"], **{k: v for k, v in theirs.items() if k != "bboxes"}}
        # NAS-FPN's 7 and FPG's 9 neck stages amplify the rounding of random weights further
        ours = {k: v for k, v in ours.items() if k != "class_names"}
        total += assert_same_detections(ours, theirs, box_atol=0.1, score_atol=2e-3)
    assert total >= 10, "too few detections for a meaningful comparison"
    assert detector.class_names == list(classes)


def _coco_classes() -> tuple[str, ...]:
    from mmdet.datasets import CocoDataset

    return CocoDataset.METAINFO["classes"]


def test_grid_sample_paste_equals_mmdetection():
    """detzoo's ``grid_sample`` mask paste is mmdetection's ``_do_paste_mask`` (CPU path),
    box by box, to the last bit; torchvision's paste is not."""
    import_mmdet()
    from mmdet.models.roi_heads.mask_heads.fcn_mask_head import _do_paste_mask

    from detzoo.layers.mask_ops import paste_masks

    g = torch.Generator().manual_seed(0)
    masks = torch.rand(5, 28, 28, generator=g)
    boxes = torch.tensor([[10.3, 5.7, 60.2, 40.9], [0.0, 0.0, 99.0, 79.0], [50.5, 60.5, 51.0, 61.25],
                          [90.0, 10.0, 130.0, 50.0], [-5.0, -3.0, 20.0, 30.0]])
    ours = paste_masks(masks, boxes, (80, 100), convention="grid_sample")
    for mask, box, pasted in zip(masks, boxes, ours):
        theirs, (rows, cols) = _do_paste_mask(mask[None, None], box[None], 80, 100, skip_empty=True)
        expected = torch.zeros(80, 100)
        expected[rows, cols] = theirs[0]
        assert torch.equal(pasted, expected)
    assert not torch.equal(paste_masks(masks, boxes, (80, 100)), ours)
