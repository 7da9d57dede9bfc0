"""COCO 2017 boxes with the crop640 recipe of NAS-FPN and FPG (mmdetection's
``*_crop640-50e_coco``): train at the 640x640 scale times a ratio in 0.8-1.2 keeping the
aspect ratio, random crop 640x640, horizontal flip, pad to 640x640; test fit in 640x640
(shorter side 640, longer side at most 640). mmdetection's resize arithmetic, since these
rows come from mmdetection; 8 images per GPU (batch 64 on 8 GPUs)."""

_base_ = "coco_detection.py"
data = dict(
    train_scales=[640],
    test_scale=640,
    max_size=640,
    resize="mmdet",
    scale_ratio_range=(0.8, 1.2),
    crop_size=(640, 640),
    pad_size=(640, 640),
    images_per_gpu=8,
)
