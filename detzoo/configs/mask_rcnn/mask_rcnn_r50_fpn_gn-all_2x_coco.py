"""Mask R-CNN, R-50 (Detectron's GN ImageNet weights, caffe pixels), FPN, GN everywhere, 2x.

Seed: the GN baseline the GN+WS page compares against (mmdetection's
``mask-rcnn_r50_fpn_gn-all_2x_coco``): GroupNorm (32 groups) in the backbone, the
FPN, the 4conv1fc box head and the mask head; the RPN head unchanged. Detectron's GN
ImageNet models put the stride on the 3x3 (pytorch-style blocks) and take caffe pixels."""

_base_ = [
    "../_base_/models/mask_rcnn_r50_fpn.py",
    "../_base_/models/gn_all_mask.py",
    "../_base_/models/caffe_pixels.py",
    "../_base_/datasets/coco_detection.py",
    "../_base_/schedules/schedule_2x.py",
    "../_base_/default_runtime.py",
]
