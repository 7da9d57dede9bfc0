"""Anchors, box coding, matching, sampling, box selection and multi-level RoIAlign against
torchvision."""

import pytest
import torch
from torchvision.models.detection import _utils as tv_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator as TvAnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import MultiScaleRoIAlign

from detzoo.layers.anchors import AnchorGenerator
from detzoo.layers.boxes import BoxCoder, Matcher, sample_balanced, select_boxes
from detzoo.layers.roi_pool import MultiLevelRoIAlign

SIZES = [[32], [64], [128], [256], [512]]
STRIDES = [4, 8, 16, 32, 64]
RATIOS = [0.5, 1.0, 2.0]


def _feature_sizes(h, w):
    return [(-(-h // s), -(-w // s)) for s in STRIDES[:4]] + [(-(-h // 64), -(-w // 64))]


def test_anchors_match_torchvision_with_its_conventions():
    h, w = 800, 1216  # P6 is 13 x 19: torchvision's strides become 800 // 13 = 61 and 64
    feats = [torch.zeros(1, 1, *s) for s in _feature_sizes(h, w)]
    ref = TvAnchorGenerator(tuple(tuple(s) for s in SIZES), (tuple(RATIOS),) * 5)(
        ImageList(torch.zeros(1, 3, h, w), [(h, w)]), feats
    )[0]
    ours = AnchorGenerator(sizes=SIZES, aspect_ratios=RATIOS, strides=STRIDES, round_base=True, strides_from_grid=True)
    got = torch.cat(ours((h, w), [f.shape[-2:] for f in feats], torch.device("cpu")))
    torch.testing.assert_close(got, ref, rtol=0, atol=0)


def test_detectron2_anchor_convention_is_unrounded_at_nominal_strides():
    gen = AnchorGenerator(sizes=[[32]], aspect_ratios=[0.5, 1.0, 2.0], strides=[4])
    (anchors,) = gen((8, 8), [(2, 2)], torch.device("cpu"))
    assert anchors.shape == (12, 4)
    w = 32 / 0.5**0.5  # ratio = h / w
    torch.testing.assert_close(anchors[0], torch.tensor([-w / 2, -w / 4, w / 2, w / 4]))
    torch.testing.assert_close(anchors[3] - anchors[0], torch.tensor([4.0, 0, 4, 0]))  # next x location
    assert gen.num_anchors == 3


def test_box_coder_matches_torchvision_and_round_trips():
    torch.manual_seed(0)
    ref = torch.rand(50, 4) * 100
    ref[:, 2:] += ref[:, :2] + 1
    gt = ref + torch.randn(50, 4) * 3
    gt[:, 2:] = torch.maximum(gt[:, 2:], gt[:, :2] + 1)
    ours, tv = BoxCoder((10, 10, 5, 5)), tv_utils.BoxCoder((10.0, 10.0, 5.0, 5.0))
    deltas = ours.encode(gt, ref)
    torch.testing.assert_close(deltas, tv.encode_single(gt, ref))
    torch.testing.assert_close(ours.decode(deltas, ref)[:, 0], gt, atol=1e-4, rtol=0)
    torch.testing.assert_close(ours.decode(deltas, ref)[:, 0], tv.decode_single(deltas, ref))


def test_matcher_thresholds_and_low_quality_matches():
    iou = torch.tensor([[0.9, 0.5, 0.1, 0.2], [0.1, 0.6, 0.25, 0.3]])
    assert Matcher(0.7, 0.3, allow_low_quality=False).match(iou).tolist() == [0, -2, -1, -2]
    # gt 1's best prediction (IoU 0.6) is kept matched to its own best gt
    assert Matcher(0.7, 0.3, allow_low_quality=True).match(iou).tolist() == [0, 1, -1, -2]
    ref = tv_utils.Matcher(0.7, 0.3, allow_low_quality_matches=True)(iou)
    assert Matcher(0.7, 0.3, allow_low_quality=True).match(iou).tolist() == ref.tolist()
    assert Matcher(0.5, 0.5, False).match(torch.zeros(0, 3)).tolist() == [-1, -1, -1]
    with pytest.raises(ValueError, match="low threshold"):
        Matcher(0.3, 0.7, False)


def test_sampler_caps_foreground_and_fills_with_background():
    is_fg = torch.zeros(1000, dtype=torch.bool)
    is_fg[:300] = True
    fg, bg = sample_balanced(is_fg, ~is_fg, num_samples=256, positive_fraction=0.25)
    assert len(fg) == 64 and len(bg) == 192
    assert is_fg[fg].all() and not is_fg[bg].any()
    fg, bg = sample_balanced(is_fg[:10] & False, ~is_fg[:10] | True, num_samples=256, positive_fraction=0.25)
    assert len(fg) == 0 and len(bg) == 10


def test_multilevel_roialign_matches_torchvision():
    torch.manual_seed(0)
    feats = {str(i): torch.randn(2, 8, 64 // 2**i, 96 // 2**i) for i in range(4)}
    boxes = [torch.tensor([[0.0, 0, 20, 20], [10, 10, 200, 250], [5, 5, 90, 60]]), torch.tensor([[30.0, 40, 380, 250]])]
    ref = MultiScaleRoIAlign(list(feats), 7, sampling_ratio=2)(feats, boxes, [(256, 384), (256, 384)])
    ours = MultiLevelRoIAlign(strides=[4, 8, 16, 32], output_size=7, sampling_ratio=2, aligned=False)
    torch.testing.assert_close(ours(list(feats.values()), boxes), ref)
    assert ours.assign_levels(
        torch.tensor([[0.0, 0, 224, 224], [0, 0, 10, 10], [0, 0, 2000, 2000]])
    ).tolist() == [2, 0, 3]


def test_box_coder_decodes_no_boxes():
    out = BoxCoder((10, 10, 5, 5)).decode(torch.zeros(0, 12), torch.zeros(0, 4))
    assert out.shape == (0, 3, 4)


def test_select_boxes_clips_filters_suppresses_per_group_and_caps():
    boxes = torch.tensor([
        [-5.0, -5, 20, 20],  # clipped to (0, 0, 20, 20)
        [1.0, 1, 21, 21],  # overlaps box 0 in its group: suppressed
        [1.0, 1, 21, 21],  # same place in another group: kept
        [30.0, 30, 31, 31],  # 1 pixel: smaller than min_size
        [40.0, 40, 60, 60],  # scores below the threshold
        [40.0, 0, 60, 20],  # third best: beyond the cap of 2
    ])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95, 0.01, 0.5])
    groups = torch.tensor([0, 0, 1, 0, 0, 1])
    kept = select_boxes(boxes, scores, groups, image_size=(50, 100), min_size=2.0, nms_thresh=0.5,
                        max_count=2, score_thresh=0.05)
    torch.testing.assert_close(kept[0], torch.tensor([[0.0, 0, 20, 20], [1, 1, 21, 21]]))
    assert kept[1].tolist() == pytest.approx([0.9, 0.7]) and kept[2].tolist() == [0, 1]
    everything = select_boxes(boxes, scores, groups, image_size=(50, 100), min_size=0.0, nms_thresh=1.0,
                              max_count=10)
    assert everything[1].tolist() == pytest.approx(sorted(scores.tolist(), reverse=True))
    assert [40.0, 40, 60, 50] in everything[0].tolist()  # clipped at the image's height
