"""RPN, caffe-style R-50 (MSRA weights), FPN, person class only, 1x.

Seed row:
- Detectron Person-Specific RPN Baselines, R-50-FPN RPN 1x, im/gpu 2 (model id 35998996): prop.
  AR 64.0 (AR@1000, person only).

Trained on the person-keypoint images with 640-800 multi-scale jitter, like Detectron's keypoint
models; its proposals feed the fast_keypoint_rcnn configs of the same backbone.

Differs from the Detectron row in the details listed once in detzoo/configs/README.md,
"Detectron rows" (detectron2-style RoIAlign, losses and anchors)."""

_base_ = [
    "../_base_/models/rpn_r50_fpn.py",
    "../_base_/models/resnet_caffe.py",
    "../_base_/datasets/coco_keypoint.py",
    "../_base_/schedules/schedule_1x.py",
    "../_base_/default_runtime.py",
]
