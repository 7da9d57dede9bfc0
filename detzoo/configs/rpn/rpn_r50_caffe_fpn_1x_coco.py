"""RPN, caffe-style R-50 (MSRA weights), FPN, 1x.

Seed rows:
- Detectron RPN Proposal Baselines, R-50-FPN RPN 1x, im/gpu 2 (model id 35998814): prop. AR 57.2
  (AR@1000).
- mmdetection v0 RPN, R-50-FPN caffe 1x: AR1000 58.2.

Differs from the Detectron row in the details listed once in detzoo/configs/README.md,
"Detectron rows" (detectron2-style RoIAlign, losses and anchors).
Differs from the mmdetection v0 row in the details listed once in detzoo/configs/README.md,
"mmdetection v0 rows" (FrozenBN, detectron2-style RoIAlign and losses)."""

_base_ = [
    "../_base_/models/rpn_r50_fpn.py",
    "../_base_/models/resnet_caffe.py",
    "../_base_/datasets/coco_detection.py",
    "../_base_/schedules/schedule_1x.py",
    "../_base_/default_runtime.py",
]
