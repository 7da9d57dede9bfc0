"""A narrow Faster R-CNN (ResNet-18 structure at 1/8 width, 32-channel FPN) on 64-pixel
synthetic images, for fast CPU tests. Data paths are set by the tests."""

_base_ = "../../detzoo/configs/demo/faster_rcnn_r18_fpn_synth.py"  # a path: some tests point the zoo elsewhere
model = dict(
    backbone=dict(stem_width=8),
    neck=dict(out_channels=32),
    dense_head=dict(anchor_generator=dict(sizes=[[8], [16], [32], [64], [128]])),
    roi_heads=dict(box_head=dict(fc_dim=64), batch_size_per_image=32),
)
data = dict(train_scales=[64], test_scale=64, max_size=64, images_per_gpu=4, num_workers=0)
optim = dict(lr=0.04, warmup_iters=5)
schedule = dict(iters=40, steps=(30,))
runtime = dict(device="cpu", log_interval=5, checkpoint_interval=20, eval_interval=0)
