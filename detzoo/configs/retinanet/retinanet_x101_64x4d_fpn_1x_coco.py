"""RetinaNet, X-101-64x4d (FB Torch7 weights, caffe pixels), FPN, 1x.

Seed row:
- Detectron RetinaNet Baselines, X-101-64x4d-FPN RetinaNet 1x, im/gpu 2 (model id 36768875): box AP 39.8.

Differs from the Detectron row in the details listed once in detzoo/configs/README.md,
"Detectron rows" (detectron2-style anchors and losses)."""

_base_ = [
    "./retinanet_r50_fpn_1x_coco.py",
    "../_base_/models/caffe_pixels.py",
]
model = dict(backbone=dict(depth=101, groups=64, width_per_group=4, init="detectron://FBResNeXt/X-101-64x4d.pkl"))
optim = dict(lr=0.01)
