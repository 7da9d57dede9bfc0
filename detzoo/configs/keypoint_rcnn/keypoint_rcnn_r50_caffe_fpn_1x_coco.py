"""Keypoint R-CNN, caffe-style R-50 (MSRA weights), FPN, 1x.

Seed row:
- Detectron End-to-End Keypoint-Only Mask R-CNN Baselines, R-50-FPN Kps 1x, im/gpu 2 (model id
  37697547): box AP 53.6, kp AP 64.2 (person only).

Differs from the Detectron row in the details listed once in detzoo/configs/README.md,
"Detectron rows" (detectron2-style RoIAlign, losses and anchors)."""

_base_ = [
    "../_base_/models/keypoint_rcnn_r50_fpn.py",
    "../_base_/models/resnet_caffe.py",
    "../_base_/datasets/coco_keypoint.py",
    "../_base_/schedules/schedule_1x.py",
    "../_base_/default_runtime.py",
]
