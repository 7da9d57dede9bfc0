"""RPN, pytorch-style R-50 (torchvision weights), FPN, 1x.

Seed row:
- mmdetection v0 RPN, R-50-FPN pytorch 1x: AR1000 57.1.

Differs from the mmdetection v0 row in the details listed once in detzoo/configs/README.md,
"mmdetection v0 rows" (FrozenBN, detectron2-style RoIAlign and losses)."""

_base_ = [
    "../_base_/models/rpn_r50_fpn.py",
    "../_base_/datasets/coco_detection.py",
    "../_base_/schedules/schedule_1x.py",
    "../_base_/default_runtime.py",
]
