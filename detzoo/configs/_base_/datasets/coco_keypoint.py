"""COCO 2017 person keypoints: person_keypoints_{train,val}2017.json (person category
only, so images without people drop out of training), multi-scale training with the
shorter side in 640..800 as Detectron's keypoint models."""

_base_ = "coco_detection.py"
data = dict(
    train=dict(
        ann_file="data/coco/annotations/person_keypoints_train2017.json",
        img_dir="data/coco/train2017",
    ),
    val=dict(
        ann_file="data/coco/annotations/person_keypoints_val2017.json",
        img_dir="data/coco/val2017",
    ),
    train_scales=[640, 672, 704, 736, 768, 800],
)
