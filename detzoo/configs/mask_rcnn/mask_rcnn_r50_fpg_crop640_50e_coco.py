"""Mask R-CNN, pytorch-style R-50, FPG, crop640 recipe, 50 epochs.

Seed row: mmdetection FPG, Mask R-CNN FPG 50e: Mem 23.2 GB, box AP 42.7, mask AP 37.8
(checkpoint mask_rcnn_r50_fpg_crop640_50e_coco-c5860453.pth).

As mmdetection's ``mask-rcnn_r50_fpg_crop640-50e_coco``: FPG of 9 stages over C2-C5 (P6 by
max-pool of the top lateral), SyncBN with gradients in the grid and the mask head; batch
padded to /64."""

_base_ = [
    "../_base_/models/mask_rcnn_r50_fpn.py",
    "../_base_/models/fpg.py",
    "../_base_/models/crop640_syncbn.py",
    "../_base_/datasets/coco_detection_crop640.py",
    "../_base_/schedules/schedule_crop640_50e.py",
    "../_base_/default_runtime.py",
]
model = dict(roi_heads=dict(mask=dict(head=dict(norm="SyncBN"))))
