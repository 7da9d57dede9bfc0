"""Mask and keypoint targets, losses and decoding against torchvision's roi_heads."""

import torch
from torchvision.models.detection.roi_heads import (
    heatmaps_to_keypoints as tv_heatmaps_to_keypoints,
    keypointrcnn_loss,
    keypoints_to_heatmap,
    maskrcnn_loss,
    paste_masks_in_image,
    project_masks_on_boxes,
)

from detzoo.layers.keypoint_ops import heatmaps_to_keypoints, keypoint_loss, keypoint_targets
from detzoo.layers.mask_ops import PASTES, mask_loss, mask_targets, paste_masks

H, W = 45, 61


def _boxes(n: int, gen: torch.Generator) -> torch.Tensor:
    """Random boxes of 1-40 px, the first four touching or crossing the image border."""
    xy = torch.rand(n, 2, generator=gen) * torch.tensor([W, H])
    wh = 1 + torch.rand(n, 2, generator=gen) * 39
    boxes = torch.cat([xy - wh / 2, xy + wh / 2], dim=1)
    boxes[0, :2] = torch.tensor([-7.3, 0.0])
    boxes[1, 2:] = torch.tensor([W, H + 5.6])
    boxes[2] = torch.tensor([W - 3.2, -4.0, W + 8.9, 6.5])
    boxes[3] = torch.tensor([0.0, 0.0, W, H])
    return boxes


def test_mask_targets_and_loss_match_torchvision():
    gen = torch.Generator().manual_seed(0)
    gt = torch.rand(3, H, W, generator=gen) > 0.5
    boxes = _boxes(9, gen)
    matched = torch.randint(0, 3, (9,), generator=gen)
    targets = mask_targets(gt[matched], boxes, size=14)
    torch.testing.assert_close(targets, project_masks_on_boxes(gt, boxes, matched, 14), rtol=0, atol=0)
    assert not torch.equal(targets, mask_targets(gt[matched], boxes, size=14, aligned=True))

    logits = torch.randn(9, 5, 14, 14, generator=gen, requires_grad=True)
    labels = torch.randint(0, 5, (3,), generator=gen)
    ref = maskrcnn_loss(logits, [boxes], [gt], [labels], [matched])
    torch.testing.assert_close(mask_loss(logits, labels[matched], targets), ref, rtol=0, atol=1e-6)


def test_mask_ops_without_boxes():
    empty = mask_targets(torch.zeros(0, H, W, dtype=torch.uint8), torch.zeros(0, 4), size=28)
    assert empty.shape == (0, 28, 28)
    logits = torch.randn(0, 3, 28, 28, requires_grad=True)
    loss = mask_loss(logits, torch.zeros(0, dtype=torch.int64), empty)
    loss.backward()
    assert loss.item() == 0 and logits.grad.shape == logits.shape
    assert paste_masks(torch.zeros(0, 28, 28), torch.zeros(0, 4), (H, W)).shape == (0, H, W)


def test_paste_masks_matches_torchvision():
    gen = torch.Generator().manual_seed(1)
    boxes = _boxes(12, gen)
    masks = torch.rand(12, 28, 28, generator=gen)
    for padding in (1, 0, 3):
        ref = paste_masks_in_image(masks[:, None], boxes, (H, W), padding=padding)[:, 0]
        torch.testing.assert_close(PASTES["torchvision"](masks, boxes, (H, W), padding), ref, rtol=0, atol=0)


def test_paste_masks_by_hand():
    # A full 4x4 mask for the box x 2..10, y 3..7: padded to 6x6 with zeros, the box expanded
    # by 6/4 to x 0..12, y 2..8 (inclusive pixels); the ones land on pixels x 2..10, y 3..7.
    pasted = paste_masks(torch.ones(1, 4, 4), torch.tensor([[2.0, 3.0, 10.0, 7.0]]), (10, 14))[0]
    expected = torch.zeros(10, 14, dtype=torch.bool)
    expected[3:8, 2:11] = True
    assert torch.equal(pasted > 0.5, expected)
    # Nothing lands outside the image, even for a box wholly outside it.
    outside = paste_masks(torch.ones(1, 4, 4), torch.tensor([[20.0, 20.0, 30.0, 30.0]]), (10, 14))
    assert outside.abs().sum() == 0


def _keypoints(boxes: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """Keypoints around the boxes (some outside), some invisible, some on the far edges."""
    n = boxes.shape[0]
    frac = torch.rand(n, k, 2, generator=gen) * 1.4 - 0.2
    xy = boxes[:, None, :2] + frac * (boxes[:, None, 2:] - boxes[:, None, :2])
    xy[:, 0, 0] = boxes[:, 2]
    xy[:, 1, 1] = boxes[:, 3]
    vis = torch.randint(0, 3, (n, k, 1), generator=gen).float()
    return torch.cat([xy, vis], dim=2)


def test_keypoint_targets_and_loss_match_torchvision():
    gen = torch.Generator().manual_seed(2)
    boxes = _boxes(10, gen)
    gt = _keypoints(boxes, 17, gen)
    index, valid = keypoint_targets(gt, boxes, heatmap_size=56)
    ref_index, ref_valid = keypoints_to_heatmap(gt, boxes, 56)
    assert torch.equal(index, ref_index) and torch.equal(valid, ref_valid.bool())
    assert valid[:, :2].any() and not valid.all()

    logits = torch.randn(10, 17, 56, 56, generator=gen)
    ref = keypointrcnn_loss(logits, [boxes], [gt], [torch.arange(10)])
    torch.testing.assert_close(keypoint_loss(logits, index, valid), ref, rtol=0, atol=1e-6)


def test_keypoint_loss_without_valid_keypoints():
    logits = torch.randn(2, 17, 56, 56, requires_grad=True)
    none = torch.zeros(2, 17, dtype=torch.bool)
    loss = keypoint_loss(logits, torch.zeros(2, 17, dtype=torch.int64), none)
    loss.backward()
    assert loss.item() == 0 and logits.grad.shape == logits.shape
    index, valid = keypoint_targets(torch.zeros(0, 17, 3), torch.zeros(0, 4), heatmap_size=56)
    assert index.shape == valid.shape == (0, 17)


def test_heatmaps_to_keypoints_matches_torchvision():
    gen = torch.Generator().manual_seed(3)
    boxes = _boxes(8, gen)
    boxes[4] = torch.tensor([10.0, 10.0, 10.4, 30.0])  # narrower than a pixel: clamped to 1
    maps = torch.randn(8, 17, 56, 56, generator=gen)
    keypoints, scores = heatmaps_to_keypoints(maps, boxes)
    ref_keypoints, ref_scores = tv_heatmaps_to_keypoints(maps, boxes)
    torch.testing.assert_close(keypoints, ref_keypoints, rtol=0, atol=1e-4)
    torch.testing.assert_close(scores, ref_scores, rtol=0, atol=1e-4)
    empty_keypoints, empty_scores = heatmaps_to_keypoints(torch.zeros(0, 17, 56, 56), torch.zeros(0, 4))
    assert empty_keypoints.shape == (0, 17, 3) and empty_scores.shape == (0, 17)
