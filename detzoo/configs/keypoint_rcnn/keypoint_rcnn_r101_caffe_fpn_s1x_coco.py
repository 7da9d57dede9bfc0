"""Keypoint R-CNN, caffe-style R-101 (MSRA weights), FPN, s1x.

Seed row:
- Detectron End-to-End Keypoint-Only Mask R-CNN Baselines, R-101-FPN Kps s1x, im/gpu 2 (model id
  37698009): box AP 55.3, kp AP 65.8 (person only).

Differs from the Detectron row in the details listed once in detzoo/configs/README.md,
"Detectron rows" (detectron2-style RoIAlign, losses and anchors)."""

_base_ = [
    "./keypoint_rcnn_r101_caffe_fpn_1x_coco.py",
    "../_base_/schedules/schedule_s1x.py",
]
