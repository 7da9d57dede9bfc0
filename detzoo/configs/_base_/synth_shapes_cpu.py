"""The demo's data, schedule and runtime: the synthetic shapes of ``detzoo data synth``
(128 x 128 images under demo_out/synth), 128-pixel input, batch 8, lr 0.04 at batch 16
with a 100-iteration warmup, 1000 iterations, evaluation every 250. Put it last in
``_base_``; the demo and the synthetic benchmarks share it."""

data = dict(
    train=dict(ann_file="demo_out/synth/train/annotations.json", img_dir="demo_out/synth/train/images"),
    val=dict(ann_file="demo_out/synth/val/annotations.json", img_dir="demo_out/synth/val/images"),
    train_scales=[128],
    test_scale=128,
    max_size=128,
    images_per_gpu=8,
    num_workers=1,
)
optim = dict(lr=0.04, warmup_iters=100)
schedule = dict(iters=1000, steps=(750, 900))
runtime = dict(log_interval=20, checkpoint_interval=200, eval_interval=250)
