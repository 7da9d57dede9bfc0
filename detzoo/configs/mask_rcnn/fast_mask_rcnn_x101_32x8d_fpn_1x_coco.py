"""Fast R-CNN with masks (Mask R-CNN from proposals), X-101-32x8d (FB Caffe2 weights, caffe
pixels), FPN, 1x, 1 image per GPU.

Seed row:
- Detectron Fast & Mask R-CNN Baselines Using Precomputed RPN Proposals, X-101-32x8d-FPN Mask
  1x, im/gpu 1 (model id 37121516): box AP 41.3, mask AP 37.0.

Proposals: rpn_x101_32x8d_fpn_1x_{train,val}2017.npz in data/coco/proposals/, made by
rpn_x101_32x8d_fpn_1x_coco (Detectron pairs each row with the RPN row of the same backbone).

Differs from the Detectron row in the details listed once in detzoo/configs/README.md,
"Detectron rows" (detectron2-style RoIAlign, losses and anchors)."""

_base_ = [
    "../_base_/models/mask_rcnn_r50_fpn.py",
    "../_base_/models/precomputed_proposals.py",
    "../_base_/models/caffe_pixels.py",
    "../_base_/datasets/coco_detection.py",
    "../_base_/schedules/schedule_1x.py",
    "../_base_/default_runtime.py",
]
model = dict(backbone=dict(depth=101, groups=32, width_per_group=8, init="detectron://20171220/X-101-32x8d.pkl"))
data = dict(
    train=dict(proposals_file="data/coco/proposals/rpn_x101_32x8d_fpn_1x_train2017.npz"),
    val=dict(proposals_file="data/coco/proposals/rpn_x101_32x8d_fpn_1x_val2017.npz"),
    images_per_gpu=1,
)
