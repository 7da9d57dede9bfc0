"""Keypoint R-CNN, X-101-32x8d (FB Caffe2 weights, caffe pixels), FPN, s1x.

Seed row:
- Detectron End-to-End Keypoint-Only Mask R-CNN Baselines, X-101-32x8d-FPN Kps s1x, im/gpu 2
  (model id 37732318): box AP 56.9, kp AP 67.0 (person only).

Differs from the Detectron row in the details listed once in detzoo/configs/README.md,
"Detectron rows" (detectron2-style RoIAlign, losses and anchors)."""

_base_ = [
    "./keypoint_rcnn_x101_32x8d_fpn_1x_coco.py",
    "../_base_/schedules/schedule_s1x.py",
]
