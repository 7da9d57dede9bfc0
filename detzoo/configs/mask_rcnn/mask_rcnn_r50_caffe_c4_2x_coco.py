"""Mask R-CNN, caffe-style R-50 (MSRA weights), C4, 2x, 1 image per GPU.

Seed row:
- Detectron End-to-End Faster & Mask R-CNN Baselines, R-50-C4 Mask 2x, im/gpu 1 (model id
  35858828): box AP 37.8, mask AP 32.8.

Differs from the Detectron row in the details listed once in detzoo/configs/README.md,
"Detectron rows" (detectron2-style RoIAlign, losses and anchors)."""

_base_ = [
    "./mask_rcnn_r50_caffe_c4_1x_coco.py",
    "../_base_/schedules/schedule_2x.py",
]
