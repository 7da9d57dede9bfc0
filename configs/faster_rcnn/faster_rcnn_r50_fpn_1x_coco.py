"""Faster R-CNN R-50-FPN 1x (Detectron 36.7 / mmdetection 37.4 box AP on val2017)."""

_base_ = [
    "../_base_/models/faster_rcnn_r50_fpn.py",
    "../_base_/datasets/coco_detection.py",
    "../_base_/schedules/schedule_1x.py",
    "../_base_/default_runtime.py",
]
