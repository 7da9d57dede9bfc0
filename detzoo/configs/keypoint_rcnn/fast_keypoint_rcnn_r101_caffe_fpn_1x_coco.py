"""Keypoint R-CNN from proposals, caffe-style R-101 (MSRA weights), FPN, 1x.

Seed row:
- Detectron Keypoint-Only Mask R-CNN Baselines Using Precomputed RPN Proposals, R-101-FPN Kps
  1x, im/gpu 2 (model id 37651996): box AP 53.5, kp AP 65.0 (person only).

Proposals: rpn_r101_caffe_fpn_person_1x_{train,val}2017.npz in data/coco/proposals/, made by
rpn_r101_caffe_fpn_person_1x_coco (the person-specific RPN row of the same backbone, as
Detectron).

Differs from the Detectron row in the details listed once in detzoo/configs/README.md,
"Detectron rows" (detectron2-style RoIAlign, losses and anchors)."""

_base_ = "./fast_keypoint_rcnn_r50_caffe_fpn_1x_coco.py"
model = dict(backbone=dict(depth=101, init="detectron://MSRA/R-101.pkl"))
data = dict(
    train=dict(proposals_file="data/coco/proposals/rpn_r101_caffe_fpn_person_1x_train2017.npz"),
    val=dict(proposals_file="data/coco/proposals/rpn_r101_caffe_fpn_person_1x_val2017.npz"),
)
