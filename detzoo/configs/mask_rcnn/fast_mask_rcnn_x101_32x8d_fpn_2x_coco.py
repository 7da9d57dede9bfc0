"""Fast R-CNN with masks (Mask R-CNN from proposals), X-101-32x8d (FB Caffe2 weights, caffe
pixels), FPN, 2x, 1 image per GPU.

Seed row:
- Detectron Fast & Mask R-CNN Baselines Using Precomputed RPN Proposals, X-101-32x8d-FPN Mask
  2x, im/gpu 1 (model id 37121596): box AP 40.7, mask AP 36.3.

Proposals: rpn_x101_32x8d_fpn_1x_{train,val}2017.npz in data/coco/proposals/, made by
rpn_x101_32x8d_fpn_1x_coco (Detectron pairs each row with the RPN row of the same backbone).

Differs from the Detectron row in the details listed once in detzoo/configs/README.md,
"Detectron rows" (detectron2-style RoIAlign, losses and anchors)."""

_base_ = [
    "./fast_mask_rcnn_x101_32x8d_fpn_1x_coco.py",
    "../_base_/schedules/schedule_2x.py",
]
