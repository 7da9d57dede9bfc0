"""Seed, device ("auto": CUDA when available, else CPU) and logging/checkpoint/evaluation intervals (in iterations;
eval_interval 0 evaluates only at the end); tensorboard=True also writes log.jsonl's scalars to
<work_dir>/tensorboard/ (needs ``pip install detzoo[tensorboard]``)."""

runtime = dict(
    seed=0,
    device="auto",
    log_interval=20,
    checkpoint_interval=5000,
    eval_interval=0,
    tensorboard=False,
)
