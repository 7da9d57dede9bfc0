"""tiny_faster_rcnn.py for one class (person) plus a narrow keypoint branch (2 convs of
32 channels, 17 keypoints), multi-scale training."""

_base_ = "tiny_faster_rcnn.py"
model = dict(
    roi_heads=dict(
        num_classes=1,
        keypoint=dict(
            in_features=["p2", "p3", "p4", "p5"],
            pooler=dict(output_size=14, sampling_ratio=0, aligned=True),
            head=dict(num_convs=2, conv_dim=32, num_keypoints=17),
        ),
    ),
)
data = dict(train_scales=[56, 64, 72])
