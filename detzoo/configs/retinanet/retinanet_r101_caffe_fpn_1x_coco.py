"""RetinaNet, R-101 (caffe style, MSRA weights), FPN, 1x.

Seed row:
- Detectron RetinaNet Baselines, R-101-FPN RetinaNet 1x, im/gpu 2 (model id 36768744): box AP 37.7.

Differs from the Detectron row in the details listed once in detzoo/configs/README.md,
"Detectron rows" (detectron2-style anchors and losses)."""

_base_ = [
    "./retinanet_r50_fpn_1x_coco.py",
    "../_base_/models/resnet_caffe.py",
]
model = dict(backbone=dict(depth=101, init="detectron://MSRA/R-101.pkl"))
optim = dict(lr=0.01)
