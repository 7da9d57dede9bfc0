"""Keypoint R-CNN from proposals, X-101-32x8d (FB Caffe2 weights, caffe pixels), FPN, 1x.

Seed row:
- Detectron Keypoint-Only Mask R-CNN Baselines Using Precomputed RPN Proposals, X-101-32x8d-FPN
  Kps 1x, im/gpu 2 (model id 37730253): box AP 55.4, kp AP 66.2 (person only).

Proposals: rpn_x101_32x8d_fpn_person_1x_{train,val}2017.npz in data/coco/proposals/, made by
rpn_x101_32x8d_fpn_person_1x_coco (the person-specific RPN row of the same backbone, as
Detectron).

Differs from the Detectron row in the details listed once in detzoo/configs/README.md,
"Detectron rows" (detectron2-style RoIAlign, losses and anchors)."""

_base_ = [
    "../_base_/models/keypoint_rcnn_r50_fpn.py",
    "../_base_/models/precomputed_proposals.py",
    "../_base_/models/caffe_pixels.py",
    "../_base_/datasets/coco_keypoint.py",
    "../_base_/schedules/schedule_1x.py",
    "../_base_/default_runtime.py",
]
model = dict(backbone=dict(depth=101, groups=32, width_per_group=8, init="detectron://20171220/X-101-32x8d.pkl"))
data = dict(
    train=dict(proposals_file="data/coco/proposals/rpn_x101_32x8d_fpn_person_1x_train2017.npz"),
    val=dict(proposals_file="data/coco/proposals/rpn_x101_32x8d_fpn_person_1x_val2017.npz"),
)
