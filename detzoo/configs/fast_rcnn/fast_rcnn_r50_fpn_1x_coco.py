"""Fast R-CNN, pytorch-style R-50 (torchvision weights), FPN, 1x.

Seed row:
- mmdetection v0 Fast R-CNN (with pre-computed proposals), R-50-FPN pytorch Faster 1x: box AP
  35.8.

Proposals: rpn_r50_fpn_1x_{train,val}2017.npz in data/coco/proposals/, made by
rpn_r50_fpn_1x_coco.

Differs from the mmdetection v0 row in the details listed once in detzoo/configs/README.md,
"mmdetection v0 rows" (FrozenBN, detectron2-style RoIAlign and losses)."""

_base_ = [
    "../_base_/models/faster_rcnn_r50_fpn.py",
    "../_base_/models/precomputed_proposals.py",
    "../_base_/datasets/coco_detection.py",
    "../_base_/schedules/schedule_1x.py",
    "../_base_/default_runtime.py",
]
data = dict(
    train=dict(proposals_file="data/coco/proposals/rpn_r50_fpn_1x_train2017.npz"),
    val=dict(proposals_file="data/coco/proposals/rpn_r50_fpn_1x_val2017.npz"),
)
