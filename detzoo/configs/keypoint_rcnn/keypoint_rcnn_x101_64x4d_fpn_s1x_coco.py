"""Keypoint R-CNN, X-101-64x4d (FB Torch7 weights, caffe pixels), FPN, s1x.

Seed row:
- Detectron End-to-End Keypoint-Only Mask R-CNN Baselines, X-101-64x4d-FPN Kps s1x, im/gpu 2
  (model id 37732415): box AP 56.9, kp AP 66.8 (person only).

Differs from the Detectron row in the details listed once in detzoo/configs/README.md,
"Detectron rows" (detectron2-style RoIAlign, losses and anchors)."""

_base_ = [
    "./keypoint_rcnn_x101_64x4d_fpn_1x_coco.py",
    "../_base_/schedules/schedule_s1x.py",
]
