"""tiny_faster_rcnn.py plus a narrow mask branch (2 convs of 16 channels)."""

_base_ = "tiny_faster_rcnn.py"
model = dict(
    roi_heads=dict(
        mask=dict(
            in_features=["p2", "p3", "p4", "p5"],
            pooler=dict(output_size=14, sampling_ratio=0, aligned=True),
            head=dict(num_convs=2, conv_dim=16),
        ),
    ),
)
