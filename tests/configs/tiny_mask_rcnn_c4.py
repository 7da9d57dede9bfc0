"""A narrow Mask R-CNN C4: ResNet-50 structure at 1/8 width up to res4, RPN with 15
anchors on res4, 14x14 RoIAlign, res5 box head shared with a deconv mask head."""

_base_ = "tiny_faster_rcnn.py"
model = dict(
    backbone=dict(depth=50, stem_width=8, out_features=["c4"]),
    neck=None,
    dense_head=dict(in_features=["c4"], anchor_generator=dict(sizes=[[8, 16, 32, 64, 128]])),
    roi_heads=dict(
        in_features=["c4"],
        pooler=dict(output_size=14),
        box_head=dict(_delete_=True, type="res5"),
        mask=dict(
            in_features=["c4"],
            pooler=dict(output_size=14, sampling_ratio=0, aligned=True),
            head=dict(num_convs=0, conv_dim=16),
        ),
    ),
)
