"""Fast R-CNN, pytorch-style R-50 (torchvision weights), FPN, 2x.

Seed row:
- mmdetection v0 Fast R-CNN (with pre-computed proposals), R-50-FPN pytorch Faster 2x: box AP
  37.1.

Proposals: rpn_r50_fpn_1x_{train,val}2017.npz in data/coco/proposals/, made by
rpn_r50_fpn_1x_coco.

Differs from the mmdetection v0 row in the details listed once in detzoo/configs/README.md,
"mmdetection v0 rows" (FrozenBN, detectron2-style RoIAlign and losses)."""

_base_ = [
    "./fast_rcnn_r50_fpn_1x_coco.py",
    "../_base_/schedules/schedule_2x.py",
]
