"""Keypoint R-CNN from proposals, caffe-style R-50 (MSRA weights), FPN, 1x.

Seed row:
- Detectron Keypoint-Only Mask R-CNN Baselines Using Precomputed RPN Proposals, R-50-FPN Kps 1x,
  im/gpu 2 (model id 37651787): box AP 52.7, kp AP 64.1 (person only).

Proposals: rpn_r50_caffe_fpn_person_1x_{train,val}2017.npz in data/coco/proposals/, made by
rpn_r50_caffe_fpn_person_1x_coco (the person-specific RPN row of the same backbone, as
Detectron).

Differs from the Detectron row in the details listed once in detzoo/configs/README.md,
"Detectron rows" (detectron2-style RoIAlign, losses and anchors)."""

_base_ = [
    "../_base_/models/keypoint_rcnn_r50_fpn.py",
    "../_base_/models/precomputed_proposals.py",
    "../_base_/models/resnet_caffe.py",
    "../_base_/datasets/coco_keypoint.py",
    "../_base_/schedules/schedule_1x.py",
    "../_base_/default_runtime.py",
]
data = dict(
    train=dict(proposals_file="data/coco/proposals/rpn_r50_caffe_fpn_person_1x_train2017.npz"),
    val=dict(proposals_file="data/coco/proposals/rpn_r50_caffe_fpn_person_1x_val2017.npz"),
)
