"""RetinaNet, pytorch-style R-50, NAS-FPN, crop640 recipe, 50 epochs.

Seed row: mmdetection NAS-FPN, R-50-NASFPN 50e: Mem 13.2 GB, 23.0 fps, box AP 40.5 ("it is
unstable to train NAS-FPN and there is a small chance that results can be 3% mAP lower").

As mmdetection's ``retinanet_r50_nasfpn_crop640-50e_coco``: NAS-FPN of 7 stages over C3-C5
(P6 / P7 by 1x1 conv + BN and max-pool), SyncBN with gradients in the neck and per level
in the head; negatives below IoU 0.5; batch padded to /128."""

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
        _delete_=True, type="NASFPN", in_features=["c3", "c4", "c5"], out_channels=256, num_stages=7, norm="SyncBN"
    ),
    dense_head=dict(head=dict(norm="SyncBN"), bg_iou=0.5),
)
