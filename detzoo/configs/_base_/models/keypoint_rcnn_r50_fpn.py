"""Keypoint R-CNN R-50-FPN: Faster R-CNN R-50-FPN for the person class plus the keypoint
branch (REFERENCE.md): 14x14 RoIAlign on P2-P5, eight 3x3 convs of 512, 4x4 deconv and
bilinear x2 to 56x56 heatmaps of the 17 COCO keypoints."""

_base_ = "faster_rcnn_r50_fpn.py"
model = dict(
    roi_heads=dict(
        num_classes=1,
        keypoint=dict(
            in_features=["p2", "p3", "p4", "p5"],
            pooler=dict(output_size=14, sampling_ratio=0, aligned=True),
            head=dict(num_convs=8, conv_dim=512, num_keypoints=17),
        ),
    ),
)
