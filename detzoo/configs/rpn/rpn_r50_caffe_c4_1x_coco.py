"""RPN, caffe-style R-50 (MSRA weights), C4, 1x.

Seed row:
- Detectron RPN Proposal Baselines, R-50-C4 RPN 1x, im/gpu 2 (model id 35998355): prop. AR 51.6
  (AR@1000).

Differs from the Detectron row in the details listed once in detzoo/configs/README.md,
"Detectron rows" (detectron2-style RoIAlign, losses and anchors)."""

_base_ = [
    "../_base_/models/rpn_r50_c4.py",
    "../_base_/models/resnet_caffe.py",
    "../_base_/datasets/coco_detection.py",
    "../_base_/schedules/schedule_1x.py",
    "../_base_/default_runtime.py",
]
