"""Faster R-CNN, pytorch-style R-50 (torchvision weights), FPN, 2x.

Seed row:
- mmdetection v0 Faster R-CNN, R-50-FPN pytorch 2x: box AP 37.7.

Differs from the mmdetection v0 row in the details listed once in detzoo/configs/README.md,
"mmdetection v0 rows" (FrozenBN, detectron2-style RoIAlign and losses)."""

_base_ = [
    "../_base_/models/faster_rcnn_r50_fpn.py",
    "../_base_/datasets/coco_detection.py",
    "../_base_/schedules/schedule_2x.py",
    "../_base_/default_runtime.py",
]
