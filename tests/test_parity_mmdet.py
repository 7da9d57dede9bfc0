"""detzoo reproduces mmdetection 3.3's own models through `detzoo convert --from mmdet`.

For each row, mmdetection builds its model from the config file it ships, with seeded,
well-conditioned random weights and BN statistics calibrated on a synthetic image
(devtools/reference_models.py), and runs its own inference (test pipeline, preprocessing,
post-processing) on two real COCO images. The checkpoint, saved as mmengine saves one, goes
through the converter into the detzoo config of the same name; detzoo must return the
same detections: same count and labels, boxes within 1e-2 px, scores within 1e-3, masks
with IoU >= 0.99.
"""

import pytest
import torch

import detzoo
from detzoo.cli import main
from devtools.reference_models import (
    MMDET_IMAGES,
    MMDET_ROWS,
    coco_classes,
    conditioned_mmdet_model,
    import_mmdet,
    mmdet_features,
    mmdet_predict,
    save_mmdet_checkpoint,
)

from detections import assert_same_detections


@pytest.mark.parametrize("config", list(MMDET_ROWS))
def test_converted_mmdet_checkpoint_reproduces_mmdetection(config, tmp_path):
    import_mmdet()
    reference = conditioned_mmdet_model(MMDET_ROWS[config], tmp_path)
    classes = reference.cfg.get("metainfo", {}).get("classes") or coco_classes()
    src, dst = tmp_path / "mmdet.pth", tmp_path / "converted.pth"
    save_mmdet_checkpoint(reference, src, classes)
    assert main(["convert", "--from", "mmdet", str(src), "--config", config, "--out", str(dst)]) == 0

    detector = detzoo.load_model(config, checkpoint=dst)
    # every pyramid level, also those no top-100 detection comes from (e.g. P7)
    inputs, theirs = mmdet_features(reference, MMDET_IMAGES[0])
    with torch.no_grad():
        ours = detector.model.neck(detector.model.backbone(inputs))
    assert len(ours) == len(theirs)
    for level, (a, b) in enumerate(zip(ours.values(), theirs)):
        # float rounding through ~60 layers, BN folded into the convolutions: 1e-4 of the largest value
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4 * b.abs().max().item(), msg=f"level {level}")
    total = 0
    for ours, theirs in zip(detector.predict(MMDET_IMAGES), mmdet_predict(reference, MMDET_IMAGES)):
        theirs = {"boxes": theirs["bboxes"], **{k: v for k, v in theirs.items() if k != "bboxes"}}
        # NAS-FPN's 7 and FPG's 9 neck stages amplify the rounding of random weights further
        ours = {k: v for k, v in ours.items() if k != "class_names"}
        total += assert_same_detections(ours, theirs, box_atol=0.1, score_atol=2e-3)
    assert total >= 10, "too few detections for a meaningful comparison"
    assert detector.class_names == list(classes)


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
