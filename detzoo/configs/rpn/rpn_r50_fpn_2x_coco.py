"""RPN, pytorch-style R-50 (torchvision weights), FPN, 2x.

Seed row:
- mmdetection v0 RPN, R-50-FPN pytorch 2x: AR1000 57.6.

Differs from the mmdetection v0 row in the details listed once in detzoo/configs/README.md,
"mmdetection v0 rows" (FrozenBN, detectron2-style RoIAlign and losses)."""

_base_ = [
    "./rpn_r50_fpn_1x_coco.py",
    "../_base_/schedules/schedule_2x.py",
]
