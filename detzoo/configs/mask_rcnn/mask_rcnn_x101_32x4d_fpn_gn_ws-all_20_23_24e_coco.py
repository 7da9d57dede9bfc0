"""Mask R-CNN, pytorch-style X-101-32x4d, FPN, GN + Weight Standardization everywhere, 20-23-24e.

Seed row: mmdetection GN+WS, Mask R-CNN X-101-32x4d-FPN pytorch GN+WS 20-23-24e: Mem 12.2 GB,
inference time not given, box AP 42.7, mask AP 38.5.

As mmdetection's config of that row: GN (32 groups) and weight-standardised convs in the
backbone, the FPN, the 4conv1fc box head and the mask head; the RPN head unchanged. The
backbone would start from the GN+WS ImageNet weights of the WS authors."""

_base_ = [
    "../_base_/models/mask_rcnn_r50_fpn.py",
    "../_base_/models/gn_ws_all_mask.py",
    "../_base_/datasets/coco_detection.py",
    "../_base_/schedules/schedule_20_23_24e.py",
    "../_base_/default_runtime.py",
]
model = dict(backbone=dict(depth=101, groups=32, width_per_group=4, init="open-mmlab://jhu/resnext101_32x4d_gn_ws"))
