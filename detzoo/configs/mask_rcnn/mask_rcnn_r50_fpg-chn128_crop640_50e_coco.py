"""Mask R-CNN, pytorch-style R-50, FPG-chn128, crop640 recipe, 50 epochs.

Seed row: mmdetection FPG, Mask R-CNN FPG-chn128 50e: Mem 15.3 GB, box AP 41.7, mask AP 36.9
(checkpoint mask_rcnn_r50_fpg-chn128_crop640_50e_coco-5c6ea10d.pth).

As mmdetection's ``mask-rcnn_r50_fpg-chn128_crop640-50e_coco``: FPG of 9 stages over C2-C5
(P6 by max-pool of the top lateral), SyncBN with gradients in the grid and the mask head;
batch padded to /64.

chn128: the neck is 128 channels wide; every head that reads it (RPN conv, RoI pooling, box
and mask heads) takes that width from the neck's own outputs (the RPN conv still widens to
256, as in mmdetection)."""

_base_ = [
    "./mask_rcnn_r50_fpg_crop640_50e_coco.py",
]
model = dict(
    neck=dict(out_channels=128),
    dense_head=dict(head=dict(conv_dim=256)),  # mmdetection's RPN conv widens to 256
)
