"""RetinaNet, pytorch-style R-50, FPG, crop640 recipe, 50 epochs.

Seed row: mmdetection FPG, RetinaNet FPG 50e: Mem 20.8 GB, box AP 40.5
(checkpoint retinanet_r50_fpg_crop640_50e_coco-46fdd1c6.pth).

As mmdetection's ``retinanet_r50_fpg_crop640_50e_coco``: FPG of 9 stages over C3-C5 (P6 / P7
by stride-2 convs on the top lateral), SyncBN with gradients in the grid and per level in
the head; negatives below IoU 0.5; batch padded to /128."""

_base_ = [
    "../_base_/models/retinanet_r50_fpn.py",
    "../_base_/models/crop640_syncbn.py",
    "../_base_/datasets/coco_detection_crop640.py",
    "../_base_/schedules/schedule_crop640_50e.py",
    "../_base_/default_runtime.py",
]
model = dict(
    size_divisibility=128,
    neck=dict(
        _delete_=True,
        type="FPG",
        in_features=["c3", "c4", "c5"],
        out_channels=256,
        num_stages=9,
        num_extra_levels=2,
        extra_downsample="conv",
        norm="SyncBN",
    ),
    dense_head=dict(head=dict(norm="SyncBN"), bg_iou=0.5),
)
