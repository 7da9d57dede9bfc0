"""RetinaNet, X-101-32x8d (Caffe2 weights, caffe pixels), FPN, 1x.

Seed row:
- Detectron RetinaNet Baselines, X-101-32x8d-FPN RetinaNet 1x, im/gpu 2 (model id 36769563): box AP 39.5.

Differs from the Detectron row in the details listed once in detzoo/configs/README.md,
"Detectron rows" (detectron2-style anchors and losses)."""

_base_ = [
    "./retinanet_r50_fpn_1x_coco.py",
    "../_base_/models/caffe_pixels.py",
]
model = dict(backbone=dict(depth=101, groups=32, width_per_group=8, init="detectron://20171220/X-101-32x8d.pkl"))
optim = dict(lr=0.01)
