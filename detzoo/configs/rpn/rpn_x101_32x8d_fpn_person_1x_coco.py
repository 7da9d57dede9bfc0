"""RPN, X-101-32x8d (FB Caffe2 weights, caffe pixels), FPN, person class only, 1x.

Seed row:
- Detectron Person-Specific RPN Baselines, X-101-32x8d-FPN RPN 1x, im/gpu 2 (model id 36760438):
  prop. AR 66.2 (AR@1000, person only).

Trained on the person-keypoint images with 640-800 multi-scale jitter, like Detectron's keypoint
models; its proposals feed the fast_keypoint_rcnn configs of the same backbone.

Differs from the Detectron row in the details listed once in detzoo/configs/README.md,
"Detectron rows" (detectron2-style RoIAlign, losses and anchors)."""

_base_ = [
    "../_base_/models/rpn_r50_fpn.py",
    "../_base_/models/caffe_pixels.py",
    "../_base_/datasets/coco_keypoint.py",
    "../_base_/schedules/schedule_1x.py",
    "../_base_/default_runtime.py",
]
model = dict(backbone=dict(depth=101, groups=32, width_per_group=8, init="detectron://20171220/X-101-32x8d.pkl"))
