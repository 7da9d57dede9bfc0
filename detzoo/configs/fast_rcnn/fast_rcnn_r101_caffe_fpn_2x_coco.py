"""Fast R-CNN, caffe-style R-101 (MSRA weights), FPN, 2x.

Seed row:
- Detectron Fast & Mask R-CNN Baselines Using Precomputed RPN Proposals, R-101-FPN Fast 2x,
  im/gpu 2 (model id 36228933): box AP 39.0.

Proposals: rpn_r101_caffe_fpn_1x_{train,val}2017.npz in data/coco/proposals/, made by
rpn_r101_caffe_fpn_1x_coco (Detectron pairs each row with the RPN row of the same backbone).

Differs from the Detectron row in the details listed once in detzoo/configs/README.md,
"Detectron rows" (detectron2-style RoIAlign, losses and anchors)."""

_base_ = [
    "./fast_rcnn_r101_caffe_fpn_1x_coco.py",
    "../_base_/schedules/schedule_2x.py",
]
