"""RetinaNet, pytorch-style R-50 (torchvision weights), FPN, 1x.

Seed row: the RetinaNet R-50-FPN 1x of the public zoos (REFERENCE.md "Reference numbers":
torchvision box AP 36.4; Detectron's caffe-weight row is retinanet_r50_caffe_fpn_1x_coco).
The config torchvision's ``retinanet_resnet50_fpn`` converts into (``detzoo convert --from
torchvision``), and the base of the other RetinaNet rows. lr 0.01 at batch 16, as
Detectron and mmdetection train RetinaNet."""

_base_ = [
    "../_base_/models/retinanet_r50_fpn.py",
    "../_base_/datasets/coco_detection.py",
    "../_base_/schedules/schedule_1x.py",
    "../_base_/default_runtime.py",
]
optim = dict(lr=0.01)
