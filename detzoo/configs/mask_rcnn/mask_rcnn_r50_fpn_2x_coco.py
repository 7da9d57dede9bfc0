"""Mask R-CNN, pytorch-style R-50 (torchvision weights), FPN, 2x.

Seed row:
- mmdetection v0 Mask R-CNN, R-50-FPN pytorch 2x: box AP 38.6, mask AP 35.1.

Differs from the mmdetection v0 row in the details listed once in detzoo/configs/README.md,
"mmdetection v0 rows" (FrozenBN, detectron2-style RoIAlign and losses)."""

_base_ = [
    "./mask_rcnn_r50_fpn_1x_coco.py",
    "../_base_/schedules/schedule_2x.py",
]
