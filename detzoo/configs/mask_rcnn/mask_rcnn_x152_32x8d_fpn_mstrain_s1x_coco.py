"""Mask R-CNN, X-152-32x8d-FPN (FB Caffe2 weights pretrained on ImageNet-5k, caffe pixels),
multi-scale training (shorter side 640-800), s1x, 1 image per GPU: Detectron's "bells and
whistles" model.

Seed rows:
- Detectron Mask R-CNN with Bells & Whistles, X-152-32x8d-FPN-IN5k Mask s1x, im/gpu 1, without
  test-time augmentation (model id 37129812): box AP 45.2, mask AP 39.7. This config
  reproduces this row.
- The same model with test-time augmentation (multi-scale test over 400-1200 plus horizontal
  flips): box AP 48.1, mask AP 41.5. `detzoo test --tta` runs this test: shorter sides
  400-1200 in steps of 100, max size 2000, each also flipped, boxes merged by NMS with box
  voting at IoU 0.9 (the row's TEST.BBOX_VOTE.VOTE_TH), mask probabilities averaged; how it
  differs from Detectron's is in detzoo/engine/tta.py.

Differs from the Detectron row in the details listed once in detzoo/configs/README.md,
"Detectron rows" (detectron2-style RoIAlign, losses and anchors). The ImageNet-5k
backbone weights are the checkpoint's business; the architecture is the same as IN-1k."""

_base_ = [
    "../_base_/models/mask_rcnn_r50_fpn.py",
    "../_base_/models/caffe_pixels.py",
    "../_base_/datasets/coco_detection.py",
    "../_base_/schedules/schedule_s1x.py",
    "../_base_/default_runtime.py",
]
model = dict(backbone=dict(depth=152, groups=32, width_per_group=8, init="detectron://25093814/X-152-32x8d-IN5k.pkl"))
data = dict(images_per_gpu=1, train_scales=[640, 672, 704, 736, 768, 800], test_time_aug=dict(vote_thresh=0.9))
