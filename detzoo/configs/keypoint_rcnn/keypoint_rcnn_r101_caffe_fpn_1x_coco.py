"""Keypoint R-CNN, caffe-style R-101 (MSRA weights), FPN, 1x.

Seed row:
- Detectron End-to-End Keypoint-Only Mask R-CNN Baselines, R-101-FPN Kps 1x, im/gpu 2 (model id
  37697946): box AP 54.5, kp AP 64.8 (person only).

Differs from the Detectron row in the details listed once in detzoo/configs/README.md,
"Detectron rows" (detectron2-style RoIAlign, losses and anchors)."""

_base_ = "./keypoint_rcnn_r50_caffe_fpn_1x_coco.py"
model = dict(backbone=dict(depth=101, init="detectron://MSRA/R-101.pkl"))
