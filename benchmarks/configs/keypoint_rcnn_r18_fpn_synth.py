"""The demo's R-18-FPN for one class (person) with a keypoint branch (eight 3x3 convs of
128 channels, 17 keypoints), trained on person-only stick figures."""

_base_ = "zoo://faster_rcnn_r18_fpn_synth"
model = dict(
    roi_heads=dict(
        num_classes=1,
        keypoint=dict(
            in_features=["p2", "p3", "p4", "p5"],
            pooler=dict(output_size=14, sampling_ratio=0, aligned=True),
            head=dict(num_convs=8, conv_dim=128, num_keypoints=17),
        ),
    ),
)
