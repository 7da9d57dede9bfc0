"""Faster R-CNN R-50-C4 (REFERENCE.md): no FPN; the RPN reads res4 (stride 16) with 15
anchors per position (sizes 32-512 x ratios 0.5/1/2), pre/post-NMS top-k 12000/2000 in
training and 6000/1000 in test; 14x14 RoIAlign on res4, then res5 (stride 2 in its
first block, mean-pooled to 2048 channels) as the box head."""

_base_ = "faster_rcnn_r50_fpn.py"
model = dict(
    backbone=dict(out_features=["c4"]),
    neck=None,
    dense_head=dict(
        in_features=["c4"],
        anchor_generator=dict(sizes=[[32, 64, 128, 256, 512]]),
        pre_nms_topk_train=12000,
        post_nms_topk_train=2000,
        pre_nms_topk_test=6000,
        post_nms_topk_test=1000,
    ),
    roi_heads=dict(
        in_features=["c4"],
        pooler=dict(output_size=14, sampling_ratio=0, aligned=True),
        box_head=dict(_delete_=True, type="res5"),
    ),
)
