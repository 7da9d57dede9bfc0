"""COCO 2017 boxes: train2017 for training, val2017 for evaluation, shorter side 800
(max 1333), horizontal flip, 2 images per GPU. Paths are relative to the working
directory, as in mmdetection (data/coco/...).

Training transforms, in order: resize the shorter side to one of ``train_scales`` (the
longer capped at ``max_size``; both limits times a ratio drawn from ``scale_ratio_range``
when set) -> random crop to ``crop_size`` (h, w) when set -> horizontal flip with
``flip_prob`` -> zero padding to ``pad_size`` (h, w) when set. Test: resize to
``test_scale`` / ``max_size`` only. ``resize`` picks the pixel arithmetic of the resize:

* ``"torchvision"``: normalise, then bilinear ``F.interpolate`` of the float image, as
  torchvision's ``GeneralizedRCNNTransform`` (bit-exact for converted torchvision models);
* ``"mmdet"``: OpenCV bilinear resize of the uint8 image to mmcv's ``rescale_size``
  (sides rounded half up), then normalise, as mmdetection's ``Resize(keep_ratio=True)``."""

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
    resize="torchvision",  # or "mmdet"; see above
    scale_ratio_range=None,  # (lo, hi): mmdetection's RandomResize ratio_range
    crop_size=None,  # (h, w): random crop after the resize
    pad_size=None,  # (h, w): pad with zeros after the flip
    images_per_gpu=2,
    num_workers=2,
    filter_empty=True,
    # Fast R-CNN: how many precomputed proposals per image (data.<split>.proposals_file)
    proposals_topk_train=2000,
    proposals_topk_test=1000,
    # Test-time augmentation (`detzoo test --tta`, `Detector.predict(..., tta=True)`; see
    # detzoo/engine/tta.py), Detectron's X-152 row: the test transform at each shorter side of
    # `scales` (longer side at most `max_size`), each also mirrored when `flip`; detections
    # merged by the model's own class-wise NMS; box voting at IoU >= `vote_thresh` (None: off;
    # Detectron's default when on: 0.8).
    test_time_aug=dict(
        scales=[400, 500, 600, 700, 800, 900, 1000, 1100, 1200], max_size=2000, flip=True, vote_thresh=None
    ),
)
