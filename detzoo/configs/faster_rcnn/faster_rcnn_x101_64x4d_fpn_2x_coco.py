"""Faster R-CNN, X-101-64x4d (FB Torch7 weights, caffe pixels), FPN, 2x, 1 image per GPU.

Seed row:
- Detectron End-to-End Faster & Mask R-CNN Baselines, X-101-64x4d-FPN Faster 2x, im/gpu 1 (model
  id 35858198): box AP 40.8.

Differs from the Detectron row in the details listed once in detzoo/configs/README.md,
"Detectron rows" (detectron2-style RoIAlign, losses and anchors)."""

_base_ = [
    "./faster_rcnn_x101_64x4d_fpn_1x_coco.py",
    "../_base_/schedules/schedule_2x.py",
]
