"""RetinaNet R-50-FPN with the defaults of detectron2 (REFERENCE.md): pytorch-style
ResNet-50 with frozen BN and frozen stem + res2; FPN P3-P5 from C3-C5 plus P6 / P7 from
stride-2 3x3 convs on C5 (ReLU before P7); 9 anchors per location (sizes 4 x stride x
2^(0, 1/3, 2/3), ratios 0.5 / 1 / 2, unrounded, nominal strides); four 3x3 convs of 256
per branch, class prior 0.01; focal loss (alpha 0.25, gamma 2) over anchors matched at IoU
>= 0.5 (negatives < 0.4), L1 box loss; test: per level the 1000 best candidates above
0.05, class-wise NMS 0.5, 100 detections. A converted checkpoint records its source's
conventions (torchvision: P6 from P5, rounded integer anchor sizes; mmdetection: no ReLU
before P7) in its meta."""

model = dict(
    pixel_mean=[123.675, 116.28, 103.53],
    pixel_std=[58.395, 57.12, 57.375],
    input_format="RGB",
    pixel_scale=1.0,
    size_divisibility=32,
    mask_paste="torchvision",
    backbone=dict(depth=50, style="pytorch", norm="FrozenBN", frozen_stages=2, init="torchvision://resnet50"),
    neck=dict(
        type="FPN",
        in_features=["c3", "c4", "c5"],
        out_channels=256,
        top_block=dict(type="p6p7", in_feature="c5", relu_before_p7=True),
    ),
    dense_head=dict(
        type="retina",
        in_features=["p3", "p4", "p5", "p6", "p7"],
        num_classes=80,
        anchor_generator=dict(
            sizes=[
                [32, 40.317474, 50.796834],
                [64, 80.634947, 101.593667],
                [128, 161.269894, 203.187335],
                [256, 322.539789, 406.374669],
                [512, 645.079578, 812.749339],
            ],
            aspect_ratios=[0.5, 1.0, 2.0],
            round_base=False,
            strides_from_grid=False,
            offset=0.0,
        ),
        head=dict(num_convs=4, conv_dim=256, norm=None, prior_prob=0.01),
        fg_iou=0.5,
        bg_iou=0.4,
        focal_alpha=0.25,
        focal_gamma=2.0,
        smooth_l1_beta=0.0,
        topk_candidates=1000,
        score_thresh=0.05,
        nms_thresh=0.5,
        detections_per_image=100,
        min_size=0.0,
        clamp_shrink=False,
    ),
    roi_heads=None,
)
