"""Mask R-CNN, X-101-32x8d (FB Caffe2 weights, caffe pixels), FPN, 2x, 1 image per GPU.

Seed row:
- Detectron End-to-End Faster & Mask R-CNN Baselines, X-101-32x8d-FPN Mask 2x, im/gpu 1 (model
  id 36762092): box AP 41.7, mask AP 36.9.

Differs from the Detectron row in the details listed once in detzoo/configs/README.md,
"Detectron rows" (detectron2-style RoIAlign, losses and anchors)."""

_base_ = [
    "./mask_rcnn_x101_32x8d_fpn_1x_coco.py",
    "../_base_/schedules/schedule_2x.py",
]
