"""`detzoo convert --from mmdet` on hand-made checkpoints with mmdetection's key names:
every key lands or the conversion fails naming the key, and nothing is written then."""

import pytest
import torch

from detzoo.cli import main
from detzoo.zoo.converters import mmdet


def test_rules_rename_each_family_of_keys():
    state = {
        "backbone.gn1.weight": torch.ones(2),
        "backbone.layer1.0.bn3.running_var": torch.ones(2),
        "backbone.layer1.0.downsample.1.weight": torch.ones(2),
        "neck.lateral_convs.0.conv.weight": torch.ones(1),
        "neck.fpn_convs.0.gn.bias": torch.ones(1),
        "neck.fpn_convs.3.conv.weight": torch.ones(1),  # RetinaNet's P6 (3 laterals)
        "neck.lateral_convs.1.conv.weight": torch.ones(1),
        "neck.lateral_convs.2.conv.weight": torch.ones(1),
        "rpn_head.rpn_cls.weight": torch.ones(1),
        "roi_head.bbox_head.shared_convs.2.gn.weight": torch.ones(1),
        "roi_head.mask_head.upsample.weight": torch.ones(1),
        "bbox_head.cls_convs.0.3.conv.weight": torch.ones(1),
        "bbox_head.cls_convs.4.3.conv.weight": torch.ones(1),  # the same shared conv at level 4
        "bbox_head.reg_convs.4.1.bn.running_mean": torch.ones(1),
        "backbone.bn1.num_batches_tracked": torch.tensor(3),
    }
    assert sorted(mmdet.rename_all(state)) == sorted([
        "backbone.bn1.weight",
        "backbone.layer1.0.bn3.running_var",
        "backbone.layer1.0.downsample.1.weight",
        "neck.lateral_convs.0.0.weight",
        "neck.output_convs.0.1.bias",
        "neck.top_block.p6.0.weight",
        "neck.lateral_convs.1.0.weight",
        "neck.lateral_convs.2.0.weight",
        "dense_head.head.objectness.weight",
        "roi_heads.box_head.convs.2.1.weight",
        "roi_heads.mask.head.deconv.weight",
        "dense_head.head.cls_convs.3.0.weight",
        "dense_head.head.box_norms.4.1.running_mean",
    ])


def test_unmatched_or_inconsistent_keys_are_errors_naming_them():
    with pytest.raises(ValueError,
                       match=r"1 mmdetection checkpoint key\(s\) have no detzoo counterpart: roi_head\.foo\.weight"):
        mmdet.rename_all({"roi_head.foo.weight": torch.ones(1)})
    with pytest.raises(ValueError, match="hold different tensors"):
        mmdet.rename_all({"bbox_head.cls_convs.0.0.conv.weight": torch.ones(1),
                          "bbox_head.cls_convs.1.0.conv.weight": torch.zeros(1)})


def test_class_names_and_coco_ids_come_from_the_meta():
    names = ("person", "bicycle", "car")
    assert mmdet.class_list({"dataset_meta": {"classes": names}}, 3) == (list(names), [1, 2, 3])
    assert mmdet.class_list({"CLASSES": ("car", "dog")}, 2) == (["car", "dog"], [3, 18])  # mmdetection 2.x
    assert mmdet.class_list({"CLASSES": ("cat", "widget")}, 2) == (["cat", "widget"], [1, 2])
    assert mmdet.class_list({}, 2) == (["class_0", "class_1"], [1, 2])


def test_relu_before_p7_follows_the_config_the_checkpoint_carries():
    assert mmdet._config_flag("neck=dict(relu_before_extra_convs=True, x=1)", "relu_before_extra_convs", False)
    assert not mmdet._config_flag("neck=dict(type='FPN')", "relu_before_extra_convs", False)


def test_a_checkpoint_that_does_not_fit_the_config_writes_nothing(tmp_path):
    src, dst = tmp_path / "mmdet.pth", tmp_path / "out.pth"
    torch.save({"state_dict": {"roi_head.bbox_head.fc_cls.weight": torch.zeros(81, 1024),
                               "roi_head.bbox_head.fc_cls.bias": torch.zeros(81)}, "meta": {}}, src)
    assert main(["convert", "--from", "mmdet", str(src), "--config", "faster_rcnn_r50_fpn_1x_coco",
                 "--out", str(dst)]) == 2
    assert not dst.exists()
