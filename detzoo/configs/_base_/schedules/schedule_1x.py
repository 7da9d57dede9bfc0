"""1x: 12 epochs, lr x0.1 at epochs 8 and 11; lr 0.02 at batch 16 scaled linearly to the
actual total batch; linear warmup over 500 iterations from 0.001 x lr."""

optim = dict(
    lr=0.02,
    base_batch_size=16,
    momentum=0.9,
    weight_decay=1e-4,
    norm_weight_decay=None,  # None: norm parameters decay like the others
    warmup_iters=500,
    warmup_factor=0.001,
    gamma=0.1,
    grad_clip=None,
)
schedule = "1x"
