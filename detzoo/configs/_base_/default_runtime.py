"""Seed, device ("auto": CUDA when available, else CPU) and logging/checkpoint/evaluation intervals (in iterations;
eval_interval 0 evaluates only at the end); tensorboard=True also writes log.jsonl's scalars to
<work_dir>/tensorboard/ (needs ``pip install detzoo[tensorboard]``). amp: mixed-precision training, None (fp32),
"fp16" (CUDA: autocast float16 with gradient scaling) or "bf16" (CPU or a bfloat16 GPU: autocast, no scaling); losses,
box decoding and NMS stay in fp32. Inference (``detzoo test``, ``infer``, ``predict``, evaluation during training) runs
under the same autocast: ``--set runtime.amp='bf16'`` tests a model in bf16. compile: ``torch.compile`` the backbone
and neck (``DetectionModel.compile_network``) for training and inference; each new input size compiles once.
load_from: start training from this trained detector (``detzoo train --load-from``: a checkpoint file of any
format detzoo reads, or a zoo model name), with class rows matched by name; None: from ``model.backbone.init``."""

runtime = dict(
    seed=0,
    device="auto",
    log_interval=20,
    checkpoint_interval=5000,
    eval_interval=0,
    tensorboard=False,
    amp=None,
    compile=False,
    load_from=None,
)
