"""The demo: Faster R-CNN R-18-FPN trained from scratch on the synthetic shapes dataset
(128 x 128 images, 1-4 shapes) on the CPU. Differs from the COCO configs in: BN with
gradients and no frozen stages (no pretrained weights), anchors halved (16-256 px) for the
small objects, 128-pixel input, 128-channel FPN, a 512-wide box head on 64 RoIs per image
(the CPU cost is in RoIAlign's backward and the fc layers), batch 8 with a short
iteration schedule."""

_base_ = [
    "../_base_/models/faster_rcnn_r50_fpn.py",
    "../_base_/datasets/coco_detection.py",
    "../_base_/schedules/schedule_1x.py",
    "../_base_/default_runtime.py",
    "../_base_/synth_shapes_cpu.py",
]
model = dict(
    backbone=dict(depth=18, norm="BN", frozen_stages=0, init=None),
    neck=dict(out_channels=128),
    dense_head=dict(
        anchor_generator=dict(sizes=[[16], [32], [64], [128], [256]]),
        pre_nms_topk_train=1000,
        post_nms_topk_train=500,
        pre_nms_topk_test=500,
        post_nms_topk_test=300,
    ),
    roi_heads=dict(num_classes=3, batch_size_per_image=64, box_head=dict(fc_dim=512)),
)
