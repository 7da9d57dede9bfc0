"""Mask R-CNN, pytorch-style R-50, FPN, GN + Weight Standardization everywhere, 2x.

Seed row: mmdetection GN+WS, Mask R-CNN R-50-FPN pytorch GN+WS 2x: Mem 7.3 GB,
inference 10.5 fps, box AP 40.6, mask AP 36.6.

As mmdetection's config of that row: GN (32 groups) and weight-standardised convs in the
backbone, the FPN, the 4conv1fc box head and the mask head; the RPN head unchanged. The
backbone would start from the GN+WS ImageNet weights of the WS authors."""

_base_ = [
    "../_base_/models/mask_rcnn_r50_fpn.py",
    "../_base_/models/gn_ws_all_mask.py",
    "../_base_/datasets/coco_detection.py",
    "../_base_/schedules/schedule_2x.py",
    "../_base_/default_runtime.py",
]
