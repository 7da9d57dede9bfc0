"""The demo's R-18 as Faster R-CNN C4: RPN with 15 anchors on res4, 14x14 RoIAlign,
res5 box head. 16 RoIs per image instead of 64: res5 on every RoI costs ~10x the FPN box
head on the CPU (4.7 s/iter at 64)."""

_base_ = "zoo://faster_rcnn_r18_fpn_synth"
model = dict(
    backbone=dict(out_features=["c4"]),
    neck=None,
    dense_head=dict(in_features=["c4"], anchor_generator=dict(sizes=[[16, 32, 64, 128, 256]])),
    roi_heads=dict(
        in_features=["c4"],
        pooler=dict(output_size=14),
        box_head=dict(_delete_=True, type="res5"),
        batch_size_per_image=16,
    ),
)
