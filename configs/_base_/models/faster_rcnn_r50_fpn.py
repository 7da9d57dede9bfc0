"""Faster R-CNN R-50-FPN with the defaults of detectron2 / mmdetection (REFERENCE.md):
pytorch-style ResNet-50 with frozen BN and frozen stem + res2, FPN P2-P6, unrounded
anchors 32-512 at nominal strides, aligned RoIAlign (sampling ratio 0), L1 box losses.
A checkpoint converted from torchvision records its own conventions in its meta."""

model = dict(
    pixel_mean=[123.675, 116.28, 103.53],
    pixel_std=[58.395, 57.12, 57.375],
    input_format="RGB",
    pixel_scale=1.0,
    size_divisibility=32,
    mask_paste="torchvision",
    backbone=dict(depth=50, style="pytorch", norm="FrozenBN", frozen_stages=2),
    neck=dict(type="FPN", out_channels=256, top_block=dict(type="maxpool")),
    dense_head=dict(
        type="rpn",
        in_features=["p2", "p3", "p4", "p5", "p6"],
        anchor_generator=dict(
            sizes=[[32], [64], [128], [256], [512]],
            aspect_ratios=[0.5, 1.0, 2.0],
            round_base=False,
            strides_from_grid=False,
        ),
        fg_iou=0.7,
        bg_iou=0.3,
        batch_size_per_image=256,
        positive_fraction=0.5,
        pre_nms_topk_train=2000,
        pre_nms_topk_test=1000,
        post_nms_topk_train=1000,
        post_nms_topk_test=1000,
        nms_thresh=0.7,
        min_size=0.0,
        smooth_l1_beta=0.0,
        clamp_shrink=False,
    ),
    roi_heads=dict(
        in_features=["p2", "p3", "p4", "p5"],
        num_classes=80,
        pooler=dict(output_size=7, sampling_ratio=0, aligned=True),
        box_head=dict(type="convfc", num_convs=0, num_fcs=2, fc_dim=1024),
        fg_iou=0.5,
        bg_iou=0.5,
        batch_size_per_image=512,
        positive_fraction=0.25,
        box_coder_weights=[10.0, 10.0, 5.0, 5.0],
        smooth_l1_beta=0.0,
        score_thresh=0.05,
        nms_thresh=0.5,
        detections_per_image=100,
        min_size=0.0,
        clamp_shrink=False,
    ),
)
