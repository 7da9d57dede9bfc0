"""RetinaNet, pytorch-style R-50, FPN, crop640 recipe, 50 epochs: the FPN baseline of the
NAS-FPN table.

Seed row: mmdetection NAS-FPN, R-50-FPN 50e: Mem 12.9 GB, 22.9 fps, box AP 37.9.

As mmdetection's ``retinanet_r50_fpn_crop640-50e_coco``: SyncBN with gradients in the FPN
outputs (laterals without norm), in the P6 / P7 convs (ReLU before P7) and per level in the
head (convs shared across levels); negatives below IoU 0.5; batch padded to /64."""

_base_ = [
    "../_base_/models/retinanet_r50_fpn.py",
    "../_base_/models/crop640_syncbn.py",
    "../_base_/datasets/coco_detection_crop640.py",
    "../_base_/schedules/schedule_crop640_50e.py",
    "../_base_/default_runtime.py",
]
model = dict(
    size_divisibility=64,
    neck=dict(norm="SyncBN", lateral_norm=False, top_block=dict(relu_before_p7=True, norm="SyncBN")),
    dense_head=dict(head=dict(norm="SyncBN"), bg_iou=0.5),
)
