"""GN everywhere (mmdetection's ``gn-all``): GroupNorm (32 groups) in the backbone, the FPN
and a ``4conv1fc`` box head (four 3x3 convs of 256 with GN, one fc of 1024); the RPN head
unchanged. Put it after the model base in ``_base_``; ``gn_all_mask.py`` adds the mask head."""

model = dict(
    backbone=dict(norm="GN", init="open-mmlab://detectron/resnet50_gn"),
    neck=dict(norm="GN"),
    roi_heads=dict(
        box_head=dict(type="convfc", num_convs=4, conv_dim=256, num_fcs=1, fc_dim=1024, norm="GN"),
    ),
)
