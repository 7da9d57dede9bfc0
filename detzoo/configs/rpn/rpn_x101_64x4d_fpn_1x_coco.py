"""RPN, X-101-64x4d (FB Torch7 weights, caffe pixels), FPN, 1x.

Seed row:
- Detectron RPN Proposal Baselines, X-101-64x4d-FPN RPN 1x, im/gpu 2 (model id 35998956): prop.
  AR 59.4 (AR@1000).

Differs from the Detectron row in the details listed once in detzoo/configs/README.md,
"Detectron rows" (detectron2-style RoIAlign, losses and anchors)."""

_base_ = [
    "../_base_/models/rpn_r50_fpn.py",
    "../_base_/models/caffe_pixels.py",
    "../_base_/datasets/coco_detection.py",
    "../_base_/schedules/schedule_1x.py",
    "../_base_/default_runtime.py",
]
model = dict(backbone=dict(depth=101, groups=64, width_per_group=4, init="detectron://FBResNeXt/X-101-64x4d.pkl"))
