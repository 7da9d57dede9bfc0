"""The demo's R-18-FPN with a mask branch (four 3x3 convs of 128 channels)."""

_base_ = "zoo://faster_rcnn_r18_fpn_synth"
model = dict(
    roi_heads=dict(
        mask=dict(
            in_features=["p2", "p3", "p4", "p5"],
            pooler=dict(output_size=14, sampling_ratio=0, aligned=True),
            head=dict(num_convs=4, conv_dim=128),
        ),
    ),
)
