"""Mask R-CNN, caffe-style R-101 (MSRA weights), FPN, 2x.

Seed row:
- Detectron End-to-End Faster & Mask R-CNN Baselines, R-101-FPN Mask 2x, im/gpu 2 (model id
  35861858): box AP 40.9, mask AP 36.4.

Differs from the Detectron row in the details listed once in detzoo/configs/README.md,
"Detectron rows" (detectron2-style RoIAlign, losses and anchors)."""

_base_ = [
    "./mask_rcnn_r101_caffe_fpn_1x_coco.py",
    "../_base_/schedules/schedule_2x.py",
]
