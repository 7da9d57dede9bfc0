"""Mask R-CNN, caffe-style R-50 (MSRA weights), FPN, 2x.

Seed row:
- Detectron End-to-End Faster & Mask R-CNN Baselines, R-50-FPN Mask 2x, im/gpu 2 (model id
  35859007): box AP 38.6, mask AP 34.5.

Differs from the Detectron row in the details listed once in detzoo/configs/README.md,
"Detectron rows" (detectron2-style RoIAlign, losses and anchors)."""

_base_ = [
    "./mask_rcnn_r50_caffe_fpn_1x_coco.py",
    "../_base_/schedules/schedule_2x.py",
]
