"""Mask R-CNN R-50-FPN: Faster R-CNN R-50-FPN plus the mask branch (REFERENCE.md): 14x14
RoIAlign on P2-P5, four 3x3 convs of 256, 2x2 deconv, 28x28 per-class masks."""

_base_ = "faster_rcnn_r50_fpn.py"
model = dict(
    roi_heads=dict(
        mask=dict(
            in_features=["p2", "p3", "p4", "p5"],
            pooler=dict(output_size=14, sampling_ratio=0, aligned=True),
            head=dict(num_convs=4, conv_dim=256),
        ),
    ),
)
