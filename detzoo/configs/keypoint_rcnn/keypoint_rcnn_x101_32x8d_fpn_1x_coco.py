"""Keypoint R-CNN, X-101-32x8d (FB Caffe2 weights, caffe pixels), FPN, 1x.

Seed row:
- Detectron End-to-End Keypoint-Only Mask R-CNN Baselines, X-101-32x8d-FPN Kps 1x, im/gpu 2
  (model id 37792158): box AP 56.0, kp AP 66.0 (person only).

Differs from the Detectron row in the details listed once in detzoo/configs/README.md,
"Detectron rows" (detectron2-style RoIAlign, losses and anchors)."""

_base_ = [
    "../_base_/models/keypoint_rcnn_r50_fpn.py",
    "../_base_/models/caffe_pixels.py",
    "../_base_/datasets/coco_keypoint.py",
    "../_base_/schedules/schedule_1x.py",
    "../_base_/default_runtime.py",
]
model = dict(backbone=dict(depth=101, groups=32, width_per_group=8, init="detectron://20171220/X-101-32x8d.pkl"))
