"""Keypoint R-CNN R-50-FPN 1x (Detectron 53.6 box AP / 64.2 keypoint AP)."""

_base_ = [
    "../_base_/models/keypoint_rcnn_r50_fpn.py",
    "../_base_/datasets/coco_keypoint.py",
    "../_base_/schedules/schedule_1x.py",
    "../_base_/default_runtime.py",
]
