"""Keypoint R-CNN from proposals, X-101-64x4d (FB Torch7 weights, caffe pixels), FPN, 1x.

Seed row:
- Detectron Keypoint-Only Mask R-CNN Baselines Using Precomputed RPN Proposals, X-101-64x4d-FPN
  Kps 1x, im/gpu 2 (model id 37731079): box AP 55.8, kp AP 66.7 (person only).

Proposals: rpn_x101_64x4d_fpn_person_1x_{train,val}2017.npz in data/coco/proposals/, made by
rpn_x101_64x4d_fpn_person_1x_coco (the person-specific RPN row of the same backbone, as
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
model = dict(backbone=dict(depth=101, groups=64, width_per_group=4, init="detectron://FBResNeXt/X-101-64x4d.pkl"))
data = dict(
    train=dict(proposals_file="data/coco/proposals/rpn_x101_64x4d_fpn_person_1x_train2017.npz"),
    val=dict(proposals_file="data/coco/proposals/rpn_x101_64x4d_fpn_person_1x_val2017.npz"),
)
