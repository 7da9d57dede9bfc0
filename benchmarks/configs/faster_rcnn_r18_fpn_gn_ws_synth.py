"""Faster R-CNN R-18-FPN with GN + weight standardisation everywhere on the synthetic
shapes: the demo with detzoo/configs/_base_/models/gn_ws_all.py (the structure of
detzoo/configs/faster_rcnn/faster_rcnn_r50_fpn_gn_ws-all_1x_coco.py): GN (32 groups) and
weight-standardised convs in the backbone, the 128-channel FPN and a 4conv1fc box head
(four 3x3 convs of 64, one fc of 512; the convs on the 64 RoIs per image are the CPU
cost: 1.4 s/iter at 128 channels on 2 CPU cores, 1.0 at 64); the RPN head unchanged."""

_base_ = ["zoo://faster_rcnn_r18_fpn_synth", "zoo://gn_ws_all"]
model = dict(backbone=dict(init=None), roi_heads=dict(box_head=dict(conv_dim=64, fc_dim=512)))
