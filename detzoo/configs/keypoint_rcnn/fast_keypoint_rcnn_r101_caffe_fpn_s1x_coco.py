"""Keypoint R-CNN from proposals, caffe-style R-101 (MSRA weights), FPN, s1x.

Seed row:
- Detectron Keypoint-Only Mask R-CNN Baselines Using Precomputed RPN Proposals, R-101-FPN Kps
  s1x, im/gpu 2 (model id 37652016): box AP 54.6, kp AP 66.0 (person only).

Proposals: rpn_r101_caffe_fpn_person_1x_{train,val}2017.npz in data/coco/proposals/, made by
rpn_r101_caffe_fpn_person_1x_coco (the person-specific RPN row of the same backbone, as
Detectron).

Differs from the Detectron row in the details listed once in detzoo/configs/README.md,
"Detectron rows" (detectron2-style RoIAlign, losses and anchors)."""

_base_ = [
    "./fast_keypoint_rcnn_r101_caffe_fpn_1x_coco.py",
    "../_base_/schedules/schedule_s1x.py",
]
