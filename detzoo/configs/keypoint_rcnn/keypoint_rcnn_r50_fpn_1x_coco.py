"""Keypoint R-CNN, pytorch-style R-50 (torchvision weights), FPN, 1x.

No seed row: the pytorch-weights counterpart of Detectron's End-to-End Keypoint-Only Mask
R-CNN R-50-FPN Kps 1x (box AP 53.6, kp AP 64.2, caffe-style MSRA weights), which
keypoint_rcnn_r50_caffe_fpn_1x_coco reproduces. torchvision's keypointrcnn_resnet50_fpn
(box AP 54.6, kp AP 65.0; REFERENCE.md) has this architecture with its own schedule."""

_base_ = [
    "../_base_/models/keypoint_rcnn_r50_fpn.py",
    "../_base_/datasets/coco_keypoint.py",
    "../_base_/schedules/schedule_1x.py",
    "../_base_/default_runtime.py",
]
