"""RetinaNet, pytorch-style R-50 (torchvision weights), FPN, 2x (mmdetection's
retinanet_r50_fpn_2x_coco row)."""

_base_ = [
    "./retinanet_r50_fpn_1x_coco.py",
    "../_base_/schedules/schedule_2x.py",
]
optim = dict(lr=0.01)
