"""torch.distributed set-up from the environment that ``torchrun`` provides.

One process per device. Multi-node is the same code: only the environment differs
(``torchrun --nnodes N --nproc_per_node P --rdzv_backend c10d --rdzv_endpoint HOST:PORT``
on every node gives each process its RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and
MASTER_PORT). On CPU the backend is gloo, on CUDA nccl.

What the trainer does with it: DDP over the model; each rank a disjoint share of every
epoch's batches (``GroupedBatchSampler``); the lr scaled to the global batch; SyncBN
layers synchronised (``detzoo.layers.norm``); every rank's RNG state in the checkpoint;
logs, checkpoints and the evaluation's files written by rank 0 only; evaluation run on a
share of the images per rank and gathered before the COCO evaluation.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def init_from_env(device: str) -> torch.device:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); return the
    device this process uses (``cuda:LOCAL_RANK`` on GPU). ``device="auto"`` is CUDA
    when available, else the CPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        target = torch.device("cuda", local_rank)
    else:
        target = torch.device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if target.type == "cuda" else "gloo")
    return target


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (a one-element list when not distributed)."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers on every rank (mmcv's ``broadcast_bn_buffer`` before evaluating).
    Per-process BN's running statistics drift apart between DDP's broadcasts at each
    forward; without this, each rank would evaluate its share of the images with its own,
    not those of the checkpoint rank 0 writes."""
    if dist.is_initialized():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def reduce_mean(values: dict[str, float]) -> dict[str, float]:
    """Average scalar logs over ranks, for logging."""
    if not dist.is_initialized():
        return values
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(values, (t / world_size()).tolist()))
