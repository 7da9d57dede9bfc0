"""RetinaNet, R-50 (caffe style, MSRA weights), FPN, 1x.

Seed row:
- Detectron RetinaNet Baselines, R-50-FPN RetinaNet 1x, im/gpu 2 (model id 36768636): box AP 35.7.

Differs from the Detectron row in the details listed once in detzoo/configs/README.md,
"Detectron rows" (detectron2-style anchors and losses)."""

_base_ = [
    "./retinanet_r50_fpn_1x_coco.py",
    "../_base_/models/resnet_caffe.py",
]
optim = dict(lr=0.01)
