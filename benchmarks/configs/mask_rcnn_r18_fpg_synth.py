"""Mask R-CNN R-18-FPG on the synthetic shapes: faster_rcnn_r18_fpg_synth.py with the mask
branch of detzoo/configs/mask_rcnn/mask_rcnn_r50_fpg_crop640_50e_coco.py (14x14 RoIAlign on
P2-P5, four 3x3 convs with BN, here 64 channels like the grid)."""

_base_ = "faster_rcnn_r18_fpg_synth.py"
model = dict(
    roi_heads=dict(
        mask=dict(
            in_features=["p2", "p3", "p4", "p5"],
            pooler=dict(output_size=14, sampling_ratio=0, aligned=True),
            head=dict(num_convs=4, conv_dim=64, norm="BN"),
        ),
    ),
)
