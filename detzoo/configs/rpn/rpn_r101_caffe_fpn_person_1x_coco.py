"""RPN, caffe-style R-101 (MSRA weights), FPN, person class only, 1x.

Seed row:
- Detectron Person-Specific RPN Baselines, R-101-FPN RPN 1x, im/gpu 2 (model id 35999521): prop.
  AR 65.2 (AR@1000, person only).

Trained on the person-keypoint images with 640-800 multi-scale jitter, like Detectron's keypoint
models; its proposals feed the fast_keypoint_rcnn configs of the same backbone.

Differs from the Detectron row in the details listed once in detzoo/configs/README.md,
"Detectron rows" (detectron2-style RoIAlign, losses and anchors)."""

_base_ = "./rpn_r50_caffe_fpn_person_1x_coco.py"
model = dict(backbone=dict(depth=101, init="detectron://MSRA/R-101.pkl"))
