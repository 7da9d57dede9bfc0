"""Faster R-CNN, pytorch-style R-50 (torchvision weights), FPN, 1x.

Seed row:
- mmdetection v0 Faster R-CNN, R-50-FPN pytorch 1x: box AP 36.4 (mmdetection v2 later: 37.4).

Detectron's R-50-FPN 1x row (36.7) uses caffe-style MSRA weights: faster_rcnn_r50_caffe_fpn_1x_coco.

Differs from the mmdetection v0 row in the details listed once in detzoo/configs/README.md,
"mmdetection v0 rows" (FrozenBN, detectron2-style RoIAlign and losses)."""

_base_ = [
    "../_base_/models/faster_rcnn_r50_fpn.py",
    "../_base_/datasets/coco_detection.py",
    "../_base_/schedules/schedule_1x.py",
    "../_base_/default_runtime.py",
]
