"""Mask R-CNN R-50-FPN 1x (Detectron 37.7 / 33.9, mmdetection 38.2 / 34.7 box / mask AP)."""

_base_ = [
    "../_base_/models/mask_rcnn_r50_fpn.py",
    "../_base_/datasets/coco_detection.py",
    "../_base_/schedules/schedule_1x.py",
    "../_base_/default_runtime.py",
]
