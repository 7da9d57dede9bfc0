"""Faster R-CNN, caffe-style R-50 (MSRA weights), C4, 1x, 1 image per GPU.

Seed row:
- Detectron End-to-End Faster & Mask R-CNN Baselines, R-50-C4 Faster 1x, im/gpu 1 (model id
  35857197): box AP 34.8.

Differs from the Detectron row in the details listed once in detzoo/configs/README.md,
"Detectron rows" (detectron2-style RoIAlign, losses and anchors)."""

_base_ = [
    "../_base_/models/faster_rcnn_r50_c4.py",
    "../_base_/models/resnet_caffe.py",
    "../_base_/datasets/coco_detection.py",
    "../_base_/schedules/schedule_1x.py",
    "../_base_/default_runtime.py",
]
data = dict(
    images_per_gpu=1,
)
