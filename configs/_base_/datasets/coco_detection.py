"""COCO 2017 boxes: train2017 for training, val2017 for evaluation, shorter side 800
(max 1333), horizontal flip, 2 images per GPU. Paths are relative to the working
directory, as in mmdetection (data/coco/...)."""

data = dict(
    train=dict(
        ann_file="data/coco/annotations/instances_train2017.json",
        img_dir="data/coco/train2017",
    ),
    val=dict(
        ann_file="data/coco/annotations/instances_val2017.json",
        img_dir="data/coco/val2017",
    ),
    train_scales=[800],
    test_scale=800,
    max_size=1333,
    flip_prob=0.5,
    images_per_gpu=2,
    num_workers=2,
    filter_empty=True,
    # Fast R-CNN: how many precomputed proposals per image (data.<split>.proposals_file)
    proposals_topk_train=2000,
    proposals_topk_test=1000,
)
