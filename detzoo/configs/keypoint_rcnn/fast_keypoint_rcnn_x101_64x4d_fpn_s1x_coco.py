"""Keypoint R-CNN from proposals, X-101-64x4d (FB Torch7 weights, caffe pixels), FPN, s1x.

Seed row:
- Detectron Keypoint-Only Mask R-CNN Baselines Using Precomputed RPN Proposals, X-101-64x4d-FPN
  Kps s1x, im/gpu 2 (model id 37731142): box AP 56.3, kp AP 67.1 (person only).

Proposals: rpn_x101_64x4d_fpn_person_1x_{train,val}2017.npz in data/coco/proposals/, made by
rpn_x101_64x4d_fpn_person_1x_coco (the person-specific RPN row of the same backbone, as
Detectron).

Differs from the Detectron row in the details listed once in detzoo/configs/README.md,
"Detectron rows" (detectron2-style RoIAlign, losses and anchors)."""

_base_ = [
    "./fast_keypoint_rcnn_x101_64x4d_fpn_1x_coco.py",
    "../_base_/schedules/schedule_s1x.py",
]
