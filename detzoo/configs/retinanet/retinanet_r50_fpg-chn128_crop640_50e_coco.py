"""RetinaNet, pytorch-style R-50, FPG-chn128, crop640 recipe, 50 epochs.

Seed row: mmdetection FPG, RetinaNet FPG-chn128 50e: Mem 19.9 GB, box AP 40.3
(checkpoint retinanet_r50_fpg-chn128_crop640_50e_coco-5cf33c76.pth).

As mmdetection's ``retinanet_r50_fpg-chn128_crop640_50e_coco``: FPG of 9 stages over C3-C5
(P6 / P7 by stride-2 convs on the top lateral), SyncBN with gradients in the grid and per
level in the head; negatives below IoU 0.5; batch padded to /128.

chn128: the neck is 128 channels wide; the RetinaNet head that reads it takes that width
from the neck's own outputs (its own convs stay 256 wide, as in mmdetection)."""

_base_ = [
    "./retinanet_r50_fpg_crop640_50e_coco.py",
]
model = dict(neck=dict(out_channels=128))
