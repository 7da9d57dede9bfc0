"""Fast R-CNN, caffe-style R-50 (MSRA weights), C4, 1x, 1 image per GPU.

Seed row:
- Detectron Fast & Mask R-CNN Baselines Using Precomputed RPN Proposals, R-50-C4 Fast 1x, im/gpu
  1 (model id 36224013): box AP 34.4.

Proposals: rpn_r50_caffe_c4_1x_{train,val}2017.npz in data/coco/proposals/, made by
rpn_r50_caffe_c4_1x_coco (Detectron pairs each row with the RPN row of the same backbone).

Differs from the Detectron row in the details listed once in detzoo/configs/README.md,
"Detectron rows" (detectron2-style RoIAlign, losses and anchors)."""

_base_ = [
    "../_base_/models/faster_rcnn_r50_c4.py",
    "../_base_/models/precomputed_proposals.py",
    "../_base_/models/resnet_caffe.py",
    "../_base_/datasets/coco_detection.py",
    "../_base_/schedules/schedule_1x.py",
    "../_base_/default_runtime.py",
]
data = dict(
    train=dict(proposals_file="data/coco/proposals/rpn_r50_caffe_c4_1x_train2017.npz"),
    val=dict(proposals_file="data/coco/proposals/rpn_r50_caffe_c4_1x_val2017.npz"),
    images_per_gpu=1,
)
