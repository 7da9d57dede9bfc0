"""GN + Weight Standardization everywhere (mmdetection's ``gn_ws-all``): ``gn_all.py`` with
every convolution of the backbone, the FPN and the box head weight-standardised
(``conv_ws``); the RPN head unchanged. ``gn_ws_all_mask.py`` adds the mask head."""

_base_ = "gn_all.py"
model = dict(
    backbone=dict(conv_ws=True, init="open-mmlab://jhu/resnet50_gn_ws"),
    neck=dict(conv_ws=True),
    roi_heads=dict(box_head=dict(conv_ws=True)),
)
