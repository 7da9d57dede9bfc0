"""Faster R-CNN, caffe-style R-50 (MSRA weights), FPN, 1x.

Seed rows:
- Detectron End-to-End Faster & Mask R-CNN Baselines, R-50-FPN Faster 1x, im/gpu 2 (model id
  35857345): box AP 36.7.
- mmdetection v0 Faster R-CNN, R-50-FPN caffe 1x: box AP 36.7.

Differs from the Detectron row in the details listed once in detzoo/configs/README.md,
"Detectron rows" (detectron2-style RoIAlign, losses and anchors).
Differs from the mmdetection v0 row in the details listed once in detzoo/configs/README.md,
"mmdetection v0 rows" (FrozenBN, detectron2-style RoIAlign and losses)."""

_base_ = [
    "../_base_/models/faster_rcnn_r50_fpn.py",
    "../_base_/models/resnet_caffe.py",
    "../_base_/datasets/coco_detection.py",
    "../_base_/schedules/schedule_1x.py",
    "../_base_/default_runtime.py",
]
