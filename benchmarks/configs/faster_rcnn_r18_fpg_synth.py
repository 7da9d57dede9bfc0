"""Faster R-CNN R-18-FPG on the synthetic shapes: the demo's R-18 Faster R-CNN with the
changes of detzoo/configs/faster_rcnn/faster_rcnn_r50_fpg_crop640_50e_coco.py: FPG of 9 stages
over C2-C5 (P6 by max-pool of the top lateral) with BN in the grid, batch padded to /64;
the crop recipe at 128 px (mmdetection resize to 128 x 0.8-1.2, random 128 x 128 crop,
pad to 128 x 128), no weight decay on norms, warmup from 0.1 x lr. BN where the zoo row
has SyncBN (one process). The grid is 64 channels wide, not the demo's 128: 9 stages over
P2-P6 cost 1.6 s/iter at 128 channels on 2 CPU cores, 0.85 at 64."""

_base_ = "zoo://faster_rcnn_r18_fpn_synth"
model = dict(
    size_divisibility=64,
    neck=dict(
        _delete_=True, type="FPG", in_features=["c2", "c3", "c4", "c5"], out_channels=64, num_stages=9, norm="BN"
    ),
)
data = dict(resize="mmdet", scale_ratio_range=(0.8, 1.2), crop_size=(128, 128), pad_size=(128, 128))
optim = dict(norm_weight_decay=0.0, warmup_factor=0.1)
