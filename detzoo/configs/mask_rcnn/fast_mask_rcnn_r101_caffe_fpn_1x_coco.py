"""Fast R-CNN with masks (Mask R-CNN from proposals), caffe-style R-101 (MSRA weights), FPN, 1x.

Seed row:
- Detectron Fast & Mask R-CNN Baselines Using Precomputed RPN Proposals, R-101-FPN Mask 1x,
  im/gpu 2 (model id 36229407): box AP 39.4, mask AP 35.6.

Proposals: rpn_r101_caffe_fpn_1x_{train,val}2017.npz in data/coco/proposals/, made by
rpn_r101_caffe_fpn_1x_coco (Detectron pairs each row with the RPN row of the same backbone).

Differs from the Detectron row in the details listed once in detzoo/configs/README.md,
"Detectron rows" (detectron2-style RoIAlign, losses and anchors)."""

_base_ = "./fast_mask_rcnn_r50_caffe_fpn_1x_coco.py"
model = dict(backbone=dict(depth=101, init="detectron://MSRA/R-101.pkl"))
data = dict(
    train=dict(proposals_file="data/coco/proposals/rpn_r101_caffe_fpn_1x_train2017.npz"),
    val=dict(proposals_file="data/coco/proposals/rpn_r101_caffe_fpn_1x_val2017.npz"),
)
