"""Faster R-CNN, X-101-32x8d (FB Caffe2 weights, caffe pixels), FPN, 1x, 1 image per GPU.

Seed row:
- Detectron End-to-End Faster & Mask R-CNN Baselines, X-101-32x8d-FPN Faster 1x, im/gpu 1 (model
  id 36761737): box AP 41.3.

Differs from the Detectron row in the details listed once in detzoo/configs/README.md,
"Detectron rows" (detectron2-style RoIAlign, losses and anchors)."""

_base_ = [
    "../_base_/models/faster_rcnn_r50_fpn.py",
    "../_base_/models/caffe_pixels.py",
    "../_base_/datasets/coco_detection.py",
    "../_base_/schedules/schedule_1x.py",
    "../_base_/default_runtime.py",
]
model = dict(backbone=dict(depth=101, groups=32, width_per_group=8, init="detectron://20171220/X-101-32x8d.pkl"))
data = dict(
    images_per_gpu=1,
)
