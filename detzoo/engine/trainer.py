"""Training loop: SGD with warmup + step schedule, JSON-lines logs (optionally mirrored to
TensorBoard), atomic checkpoints, exact resume, periodic evaluation, torch.distributed
data parallelism (``detzoo.engine.distributed``), mixed precision (``runtime.amp``)."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from detzoo.config import ConfigError, check_keys, dump_config
from detzoo.data.build import build_dataset, model_targets
from detzoo.data.loader import build_train_loader
from detzoo.detectors.build import build_model, num_classes_key
from detzoo.engine import distributed
from detzoo.engine.checkpoint import (
    CheckpointError,
    atomic_write,
    get_rng_state,
    load_checkpoint,
    load_state,
    save_checkpoint,
    set_rng_state,
)
from detzoo.engine.evaluate import compare_classes, evaluate, model_inputs
from detzoo.engine.initialize import init_backbone, transfer_weights
from detzoo.engine.inference import autocast_dtype
from detzoo.engine.schedule import WarmupMultiStepLR, check_optim, resolve_schedule, scale_lr
from detzoo.engine.workdir import CHECKPOINT, FINAL, LOG, TENSORBOARD, claim_work_dir, remove_earlier_run
from detzoo.errors import UserError
from detzoo.evaluation.coco import format_table
from detzoo.layers.norm import is_norm
from detzoo.version import __version__

logger = logging.getLogger("detzoo.train")

CONFIG_KEYS = ("model", "data", "optim", "schedule", "runtime")
OPTIM_KEYS = (
    "lr",
    "base_batch_size",
    "momentum",
    "weight_decay",
    "norm_weight_decay",
    "warmup_iters",
    "warmup_factor",
    "gamma",
    "grad_clip",
)
RUNTIME_KEYS = (
    "seed", "device", "log_interval", "checkpoint_interval", "eval_interval", "tensorboard", "amp", "compile",
    "load_from",
)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rank_rng_state(rng: list[dict] | dict, *, path: Path, rank: int, world: int) -> dict:
    """This rank's RNG state from a training checkpoint's ``rng`` (one state per rank; a
    plain dict in a checkpoint written by one process before per-rank states). A run with
    another number of processes is refused: the data split and the lr depend on it."""
    states = rng if isinstance(rng, list) else [rng]
    if len(states) != world:
        raise ConfigError(
            f"{path} was written by {len(states)} process(es) but this run has {world}; "
            f"resume with {len(states)} (torchrun --nproc_per_node / --nnodes)"
        )
    return states[rank]


class NonFiniteLossError(UserError, FloatingPointError):
    """The loss (or, at a checkpoint, a weight) became NaN or infinite: training stopped
    before the bad state was saved. ``lr`` is the suggested (tenfold lower) ``optim.lr``;
    ``resumable``: this run wrote a checkpoint to resume from."""

    def __init__(self, message: str, *, lr: float, resumable: bool) -> None:
        super().__init__(message)
        self.lr = lr
        self.resumable = resumable


def _non_finite(what: str, iteration: int, *, cfg: Mapping[str, Any], checkpoint: Path, saved: int | None,
                weights_gave_it: bool = False) -> NonFiniteLossError:
    """The ``NonFiniteLossError`` for ``what`` at ``iteration`` (as logged), saying how to go
    on: resume from this run's last checkpoint (of iteration ``saved``) with a lower lr, or
    start again with one when there is none or when its weights gave the failing loss."""
    lr = cfg["optim"]["lr"] / 10
    if saved is None:
        advice = f"no checkpoint of this run was written yet: start again with a lower lr, e.g. optim.lr={lr:g}"
    elif weights_gave_it:
        advice = (f"the last checkpoint, {checkpoint} (iteration {saved}), is left as it was, but its weights "
                  f"give this loss: start again with a lower lr, e.g. optim.lr={lr:g}")
    else:
        advice = (f"the last good checkpoint, {checkpoint} (iteration {saved}), is left as it was: "
                  f"resume from it with a lower lr, e.g. optim.lr={lr:g}")
    return NonFiniteLossError(f"{what} at iteration {iteration}; training stopped; {advice}",
                              lr=lr, resumable=saved is not None and not weights_gave_it)


def _config_changes(old: Any, new: Any, key: str = "") -> list[str]:
    """``key: old -> new`` for every dotted key whose value differs between two configs."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        return [change for k in sorted({*old, *new}, key=str)
                for change in _config_changes(old.get(k, "<unset>"), new.get(k, "<unset>"), f"{key}{k}.")]
    return [] if old == new else [f"{key[:-1]}: {old!r} -> {new!r}"]


def resume_state(state: Mapping[str, Any], path: Path, *, model: torch.nn.Module,
                 optimizer: torch.optim.Optimizer, cfg: Mapping[str, Any]) -> int:
    """Load a training checkpoint's weights and optimizer buffers (momentum) into ``model``
    and ``optimizer``; return its iteration. The optimizer's hyperparameters (lr, momentum,
    weight decay) stay those of ``cfg``, so overrides given when resuming apply: the
    scheduler, built afterwards, puts the lr where ``cfg``'s schedule has it at the resumed
    iteration (the warmup is not restarted). What ``cfg`` changes from the checkpoint's
    config is logged. A checkpoint that is not a training one, or does not fit the model
    or its parameter groups, is a ``CheckpointError``."""
    missing = [key for key in ("model", "optimizer", "iteration", "rng") if key not in state]
    if missing:
        raise CheckpointError(f"{path} is not a training checkpoint: it lacks {missing}")
    load_state(model, state["model"], path)
    own = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    try:
        optimizer.load_state_dict(state["optimizer"])
    except ValueError as e:  # torch: another number or size of parameter groups
        raise CheckpointError(
            f"cannot resume from {path}: its optimizer state does not fit this config's parameter groups ({e}); "
            "optim.norm_weight_decay or the frozen layers differ from the run that wrote it"
        ) from e
    for group, hyperparameters in zip(optimizer.param_groups, own):
        group.update(hyperparameters, initial_lr=hyperparameters["lr"])  # initial_lr: the scheduler's base lr
    changes = _config_changes(state.get("meta", {}).get("config", {}), cfg)
    if changes:
        logger.warning("resuming %s (iteration %d) with a changed config, applied from here on: %s",
                       path, state["iteration"], "; ".join(changes))
    return state["iteration"]


def _checkpoint_meta(cfg: Mapping[str, Any], dataset) -> dict[str, Any]:
    return {
        "config": dict(cfg),
        "class_names": list(dataset.class_names),
        "cat_ids": list(dataset.cat_ids),
        "detzoo_version": __version__,
    }


class TrainingLog:
    """Where the trainer's records go, on the main process only: one JSON line each in
    ``<work_dir>/log.jsonl`` and, with ``tensorboard``, the same numbers as TensorBoard
    scalars in ``<work_dir>/tensorboard/`` at the record's ``iter``: ``train/<field>`` for
    a training record, ``val/<type>/<metric>`` for an evaluation (``{"iter", "eval"}``).
    Without the tensorboard package, ``tensorboard=True`` is a ConfigError at once, on
    every process."""

    def __init__(self, work_dir: Path, *, tensorboard: bool) -> None:
        if not isinstance(tensorboard, bool):
            raise ConfigError(f"runtime.tensorboard must be True or False, got {tensorboard!r}")
        self.path = work_dir / LOG
        self.tensorboard_dir = work_dir / TENSORBOARD if tensorboard else None
        self._writer = None
        if tensorboard and importlib.util.find_spec("tensorboard") is None:
            raise ConfigError("runtime.tensorboard=True needs the tensorboard package: pip install detzoo[tensorboard]")

    def begin(self, iteration: int) -> None:
        """Start the log at ``iteration``: drop the records of later iterations (those a
        resumed run abandoned), or every record for a fresh run (0)."""
        if not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines(keepends=True)
                if line.strip() and json.loads(line).get("iter", 0) <= iteration]
        with atomic_write(self.path, text=True) as f:
            f.writelines(kept)

    def write(self, record: Mapping[str, Any]) -> None:
        if not distributed.is_main():
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tensorboard_dir is None:
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.tensorboard_dir))
        if "eval" in record:
            scalars = {f"val/{kind}/{name}": v for kind, values in record["eval"].items() for name, v in values.items()}
        else:
            scalars = {f"train/{name}": v for name, v in record.items() if name != "iter"}
        for tag, value in scalars.items():
            self._writer.add_scalar(tag, value, global_step=record["iter"])
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def param_groups(model: torch.nn.Module, weight_decay: float, norm_weight_decay: float | None) -> list[dict]:
    """The trainable parameters as SGD groups: the parameters of norm layers (BN, SyncBN,
    GN) decay by ``norm_weight_decay`` when it is set (mmdetection's ``norm_decay_mult``;
    the crop640 recipe sets 0), every other one by ``weight_decay``."""
    if norm_weight_decay is None:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    norm_ids = {id(p) for m in model.modules() if is_norm(m) for p in m.parameters(recurse=False)}
    groups = {True: [], False: []}
    for p in model.parameters():
        if p.requires_grad:
            groups[id(p) in norm_ids].append(p)
    return [
        {"params": groups[False], "weight_decay": weight_decay},
        {"params": groups[True], "weight_decay": norm_weight_decay},
    ]


def _start_weights(model, cfg: Mapping[str, Any], load_from: Mapping[str, Any] | None, class_names) -> None:
    """Fill a fresh run's model: from the detector ``load_from`` (the checkpoint that
    ``runtime.load_from`` names, read by the caller), else from ``model.backbone.init``'s
    ImageNet weights, else it keeps its random initialisation."""
    source = cfg["runtime"].get("load_from")
    if (source is None) != (load_from is None):
        raise ConfigError("runtime.load_from and the checkpoint passed to train() go together: "
                          "detzoo.api.train (and `detzoo train --load-from`) read it")
    if load_from is None:
        line = init_backbone(model)
    else:
        line = transfer_weights(model, load_from, class_names=class_names, source=str(source))
        recorded = (load_from.get("meta") or {}).get("config_overrides") or {}
        differ = [f"{key}={value!r} (config: {_get(cfg, key)!r})" for key, value in recorded.items()
                  if _get(cfg, key) != value]
        if differ:
            logger.warning("%s was made with conventions the config does not share; training uses the config's: %s",
                           source, "; ".join(differ))
    if line and distributed.is_main():
        logger.info(line)


def _get(cfg: Mapping[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for key in dotted.split("."):
        node = node.get(key, "<unset>") if isinstance(node, Mapping) else "<unset>"
    return node


def train(
    cfg: Mapping[str, Any],
    *,
    work_dir: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    load_from: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train the model of ``cfg``; returns the final validation metrics per evaluation
    type (empty if the config has no ``data.val``). Writes ``log.jsonl``, ``checkpoint.pth`` (full state,
    for ``resume``), ``model_final.pth`` (model + meta) and ``config.py`` to ``work_dir``, which
    the run holds alone (``detzoo.engine.workdir``: locked; a fresh run into one with an earlier
    run's checkpoint needs ``overwrite``; Ctrl-C raises ``TrainingInterrupted``).

    A fresh run starts from ``load_from`` (a detzoo checkpoint dict: the detector that
    ``runtime.load_from`` names, as ``detzoo.api.train`` reads it) or else from the backbone's
    ``init``; ``resume`` continues from ``<work_dir>/checkpoint.pth`` instead."""
    with claim_work_dir(Path(work_dir), resume=resume, overwrite=overwrite):
        return _train(cfg, work_dir=Path(work_dir), resume=resume, overwrite=overwrite, load_from=load_from)


def _train(
    cfg: Mapping[str, Any], *, work_dir: Path, resume: bool, overwrite: bool, load_from: Mapping[str, Any] | None
) -> dict[str, Any]:
    check_keys("config", cfg, CONFIG_KEYS)
    optim, runtime = cfg["optim"], cfg["runtime"]
    check_keys("optim", optim, OPTIM_KEYS)
    check_optim(optim)
    check_keys("runtime", runtime, RUNTIME_KEYS)
    log = TrainingLog(work_dir, tensorboard=runtime["tensorboard"])
    device = distributed.init_from_env(runtime["device"])
    rank, world = distributed.rank(), distributed.world_size()
    amp_dtype = autocast_dtype(runtime["amp"], device)
    _seed_all(runtime["seed"] + rank)

    model = build_model(cfg["model"]).to(device)
    if runtime["compile"]:
        model.compile_network()
    data = cfg["data"]
    targets = model_targets(model.outputs)
    train_set = build_dataset(data, "train", model.pixel_format, train=True, seed=runtime["seed"], **targets)
    if not model.is_proposal_generator and len(train_set.class_names) != model.num_classes:
        key = num_classes_key(cfg["model"])
        raise ConfigError(
            f"{key} is {model.num_classes} but {data['train']['ann_file']} has "
            f"{len(train_set.class_names)} categories; set --set {key}={len(train_set.class_names)}"
        )
    val_set = build_dataset(data, "val", model.pixel_format, train=False, **targets) if "val" in data else None
    if val_set is not None and not model.is_proposal_generator:  # now, not at the first evaluation
        compare_classes(train_set.cat_ids, train_set.class_names, train_set.ann_file, val_set)
    if not resume:
        _start_weights(model, cfg, load_from, train_set.class_names)

    batch = data["images_per_gpu"] * world
    loader_args = dict(batch_size=data["images_per_gpu"], num_workers=data["num_workers"], seed=runtime["seed"])
    iters_per_epoch = len(build_train_loader(train_set, **loader_args, rank=rank, world_size=world))
    schedule = resolve_schedule(cfg["schedule"], iters_per_epoch=iters_per_epoch, batch_size=batch)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(
        param_groups(model, optim["weight_decay"], optim["norm_weight_decay"]),
        lr=scale_lr(optim["lr"], base_batch_size=optim["base_batch_size"], batch_size=batch),
        momentum=optim["momentum"],
    )
    # A pass-through unless fp16: then the loss is scaled and steps with inf/NaN gradients skipped.
    scaler = torch.amp.GradScaler(device.type, enabled=runtime["amp"] == "fp16")
    start = 0
    if resume:
        state = load_checkpoint(work_dir / CHECKPOINT, map_location=device)
        start = resume_state(state, work_dir / CHECKPOINT, model=model, optimizer=optimizer, cfg=cfg)
        set_rng_state(rank_rng_state(state["rng"], path=work_dir / CHECKPOINT, rank=rank, world=world))
        if state.get("scaler"):  # empty when written without fp16: the scaler starts afresh
            scaler.load_state_dict(state["scaler"])
    # built after resuming, from the config: the lr at each iteration is its schedule's
    scheduler = WarmupMultiStepLR(
        optimizer,
        steps=schedule.steps,
        gamma=optim["gamma"],
        warmup_iters=optim["warmup_iters"],
        warmup_factor=optim["warmup_factor"],
        last_epoch=start - 1,
    )
    meta = _checkpoint_meta(cfg, train_set)
    if distributed.is_main():
        if overwrite:  # only now, with the config, data and model built: a mistake in them costs no earlier run
            remove_earlier_run(work_dir)
        log.begin(start)
        work_dir.mkdir(parents=True, exist_ok=True)
        (work_dir / "config.py").write_text(dump_config(dict(cfg)))
    device_ids = [device.index] if device.type == "cuda" else None
    net = DistributedDataParallel(model, device_ids=device_ids) if world > 1 else model

    saved = start if resume else None  # the iteration of this run's last checkpoint

    def save(iteration: int) -> None:
        nonlocal saved
        if not all(torch.isfinite(p).all() for p in model.parameters()):  # never save a broken state
            raise _non_finite("a weight is not finite", iteration, cfg=cfg, checkpoint=work_dir / CHECKPOINT,
                              saved=saved)
        rng = distributed.gather(get_rng_state())  # every rank's, for an exact resume under DDP
        if distributed.is_main():
            save_checkpoint(
                work_dir / CHECKPOINT,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "iteration": iteration,
                    "rng": rng,
                    "scaler": scaler.state_dict(),
                    "meta": meta,
                },
            )
        saved = iteration

    metrics: dict[str, dict[str, float]] = {}
    it = start
    bar = tqdm(total=schedule.max_iters, initial=start, desc="train", disable=not distributed.is_main())
    window: list[dict[str, float]] = []
    model.train()
    while it < schedule.max_iters:
        epoch, skip = divmod(it, iters_per_epoch)
        loader = build_train_loader(
            train_set, **loader_args, epoch=epoch, skip_batches=skip, rank=rank, world_size=world
        )
        tick = time.perf_counter()
        for samples in loader:
            data_time = time.perf_counter() - tick
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                losses = net([s.image for s in samples], [s.instances for s in samples], **model_inputs(samples))
            loss = sum(losses.values())
            if not math.isfinite(loss.item()):
                terms = ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
                raise _non_finite(f"loss is {loss.item()} ({terms})", it + 1, cfg=cfg, checkpoint=work_dir / CHECKPOINT,
                                  saved=saved, weights_gave_it=saved == it)  # it: the weights' iteration
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if optim["grad_clip"]:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, optim["grad_clip"])
            lr = optimizer.param_groups[0]["lr"]
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            it += 1
            window.append(
                {"loss": loss.item(), **{k: v.item() for k, v in losses.items()},
                 "time": time.perf_counter() - tick, "data_time": data_time}
            )
            bar.update(1)
            if it % runtime["log_interval"] == 0 or it == schedule.max_iters:
                mean = distributed.reduce_mean({k: float(np.mean([w[k] for w in window])) for k in window[0]})
                window = []
                record = {"iter": it, "epoch": epoch, "lr": lr, **mean,
                          "eta_s": mean["time"] * (schedule.max_iters - it)}
                if device.type == "cuda":
                    record["memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
                    torch.cuda.reset_peak_memory_stats(device)
                log.write(record)
                bar.set_postfix(loss=f"{mean['loss']:.3f}", lr=f"{lr:.2e}", s_iter=f"{mean['time']:.2f}")
            if it % runtime["checkpoint_interval"] == 0 or it == schedule.max_iters:
                save(it)
            if it == schedule.max_iters and distributed.is_main():  # before the final evaluation: it cannot cost it
                save_checkpoint(work_dir / FINAL, {"model": model.state_dict(), "meta": meta})
            if val_set is not None and (
                it == schedule.max_iters or (runtime["eval_interval"] and it % runtime["eval_interval"] == 0)
            ):
                distributed.broadcast_buffers(model)  # every rank evaluates the model rank 0 saves
                metrics = evaluate(
                    model, val_set, cat_ids=train_set.cat_ids, num_workers=data["num_workers"], amp=runtime["amp"]
                )
                log.write({"iter": it, "eval": metrics})
                if distributed.is_main():
                    for iou_type, values in metrics.items():
                        tqdm.write(f"iteration {it}: {iou_type}\n{format_table(values)}")
            if it >= schedule.max_iters:
                break
            tick = time.perf_counter()
    bar.close()
    log.close()
    return metrics
