"""Fast R-CNN, caffe-style R-50 (MSRA weights), FPN, 1x.

Seed rows:
- Detectron Fast & Mask R-CNN Baselines Using Precomputed RPN Proposals, R-50-FPN Fast 1x,
  im/gpu 2 (model id 36225147): box AP 36.4.
- mmdetection v0 Fast R-CNN (pre-computed proposals), R-50-FPN caffe Faster 1x: box AP 36.6.

Proposals: rpn_r50_caffe_fpn_1x_{train,val}2017.npz in data/coco/proposals/, made by
rpn_r50_caffe_fpn_1x_coco (Detectron pairs each row with the RPN row of the same backbone).

Differs from the Detectron row in the details listed once in detzoo/configs/README.md,
"Detectron rows" (detectron2-style RoIAlign, losses and anchors).
Differs from the mmdetection v0 row in the details listed once in detzoo/configs/README.md,
"mmdetection v0 rows" (FrozenBN, detectron2-style RoIAlign and losses)."""

_base_ = [
    "../_base_/models/faster_rcnn_r50_fpn.py",
    "../_base_/models/precomputed_proposals.py",
    "../_base_/models/resnet_caffe.py",
    "../_base_/datasets/coco_detection.py",
    "../_base_/schedules/schedule_1x.py",
    "../_base_/default_runtime.py",
]
data = dict(
    train=dict(proposals_file="data/coco/proposals/rpn_r50_caffe_fpn_1x_train2017.npz"),
    val=dict(proposals_file="data/coco/proposals/rpn_r50_caffe_fpn_1x_val2017.npz"),
)
