"""The crop640 recipe's schedule (NAS-FPN, FPG): 50 epochs, lr x0.1 at epochs 30 and 40;
SGD lr 0.08 at batch 64 scaled linearly to the actual batch, momentum 0.9, weight decay
1e-4 and none on norm parameters; linear warmup over 1000 iterations from 0.1 x lr."""

_base_ = "schedule_1x.py"
optim = dict(lr=0.08, base_batch_size=64, warmup_iters=1000, warmup_factor=0.1, norm_weight_decay=0.0)
schedule = "50e"
