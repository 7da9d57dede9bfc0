"""RPN, caffe-style R-101 (MSRA weights), FPN, 1x.

Seed row:
- Detectron RPN Proposal Baselines, R-101-FPN RPN 1x, im/gpu 2 (model id 35998887): prop. AR
  58.2 (AR@1000).

Differs from the Detectron row in the details listed once in detzoo/configs/README.md,
"Detectron rows" (detectron2-style RoIAlign, losses and anchors)."""

_base_ = "./rpn_r50_caffe_fpn_1x_coco.py"
model = dict(backbone=dict(depth=101, init="detectron://MSRA/R-101.pkl"))
