"""Faster R-CNN, caffe-style R-101 (MSRA weights), FPN, 1x.

Seed row:
- Detectron End-to-End Faster & Mask R-CNN Baselines, R-101-FPN Faster 1x, im/gpu 2 (model id
  35857890): box AP 39.4.

Differs from the Detectron row in the details listed once in detzoo/configs/README.md,
"Detectron rows" (detectron2-style RoIAlign, losses and anchors)."""

_base_ = "./faster_rcnn_r50_caffe_fpn_1x_coco.py"
model = dict(backbone=dict(depth=101, init="detectron://MSRA/R-101.pkl"))
