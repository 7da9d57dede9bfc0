"""Training: SGD with warmup + step schedule, JSON-lines logs (optionally mirrored to
TensorBoard), atomic checkpoints, exact resume, periodic evaluation, torch.distributed
data parallelism (``detzoo.engine.distributed``), mixed precision (``runtime.amp``).
``train`` builds the run and hands it to a ``Trainer``, whose loop is a few lines over
hooks (``detzoo.engine.hooks``) that log, time, save and evaluate."""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from detzoo.config import SECTIONS, ConfigError, check_keys, check_not_none, dump_config
from detzoo.data.build import build_dataset, model_targets
from detzoo.data.coco import CocoDataset, Sample
from detzoo.data.loader import build_train_loader
from detzoo.detectors.build import build_model, num_classes_key
from detzoo.detectors.model import DetectionModel
from detzoo.engine import distributed
from detzoo.engine.checkpoint import load_checkpoint, load_state, set_rng_state
from detzoo.engine.evaluate import compare_classes, evaluate, model_inputs
from detzoo.engine.hooks import Checkpointer, EvalHook, Hook, IterationTimer, LogWriter, TrainingLog
from detzoo.engine.initialize import init_backbone, transfer_weights
from detzoo.engine.inference import autocast_dtype
from detzoo.engine.schedule import WarmupMultiStepLR, check_optim, resolve_schedule, scale_lr
from detzoo.engine.workdir import CHECKPOINT, FINAL, claim_work_dir, remove_earlier_run
from detzoo.errors import CheckpointError
from detzoo.layers.norm import is_norm
from detzoo.version import __version__

logger = logging.getLogger("detzoo.train")

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
RUNTIME_OPTIONAL = ("amp", "load_from")  # None: fp32; from model.backbone.init


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


class Trainer:
    """detectron2's ``SimpleTrainer``: ``train()`` runs the iterations from ``start_iter`` to
    ``max_iter``, each ``run_step`` between its hooks' ``before_step`` and ``after_step``
    (``detzoo.engine.hooks``; they are called in their order). The batches come from
    ``loader(epoch, skip_batches)``, epoch after epoch of ``iters_per_epoch``, the first
    one from iteration ``start_iter`` on (a resumed run's batches are an uninterrupted
    run's). Under torch.distributed the forward and backward go through DDP."""

    def __init__(
        self,
        model: DetectionModel,
        optimizer: torch.optim.Optimizer,
        scheduler: WarmupMultiStepLR,
        scaler: torch.amp.GradScaler,
        *,
        loader: Callable[[int, int], Iterable[list[Sample]]],
        iters_per_epoch: int,
        start_iter: int,
        max_iter: int,
        grad_clip: float | None,
        amp_dtype: torch.dtype | None,
        hooks: Sequence[Hook],
    ) -> None:
        self.model, self.optimizer, self.scheduler, self.scaler = model, optimizer, scheduler, scaler
        self.loader, self.iters_per_epoch = loader, iters_per_epoch
        self.start_iter = self.iter = start_iter
        self.max_iter = max_iter
        self.grad_clip, self.amp_dtype = grad_clip, amp_dtype
        self.params = [p for p in model.parameters() if p.requires_grad]
        device = model.device
        device_ids = [device.index] if device.type == "cuda" else None
        self.net = DistributedDataParallel(model, device_ids=device_ids) if distributed.world_size() > 1 else model
        self.hooks = list(hooks)
        for hook in self.hooks:
            hook.trainer = self

    def train(self) -> None:
        self._batches = self._epochs()
        self._call("before_train")
        try:
            self.model.train()
            while self.iter < self.max_iter:
                self._call("before_step")
                self.run_step()
                self._call("after_step")
        finally:
            self._batches.close()
            self._call("after_train")

    def run_step(self) -> None:
        """One iteration: its batch, the forward under autocast (``amp_dtype``), the
        backward through the GradScaler, the gradient clipping, the optimizer's and the
        scheduler's step; the hooks' ``after_forward`` and ``after_backward`` between."""
        start = time.perf_counter()
        samples = next(self._batches)
        self.data_time = time.perf_counter() - start
        with torch.autocast(self.model.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            losses = self.net([s.image for s in samples], [s.instances for s in samples], **model_inputs(samples))
        loss = sum(losses.values())
        self.scalars = {"loss": loss.item(), **{k: v.item() for k, v in losses.items()}}
        self._call("after_forward")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self._call("after_backward")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.iter += 1

    def _epochs(self) -> Iterator[list[Sample]]:
        """The batches from iteration ``iter`` on: the rest of its epoch, then the next epochs."""
        while True:
            self.epoch, skip = divmod(self.iter, self.iters_per_epoch)
            yield from self.loader(self.epoch, skip)

    def _call(self, point: str) -> None:
        for hook in self.hooks:
            getattr(hook, point)()


def train(
    cfg: Mapping[str, Any],
    *,
    work_dir: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    load_from: Mapping[str, Any] | None = None,
    hooks: Sequence[Hook] = (),
) -> dict[str, Any]:
    """Train the model of ``cfg``; returns the final validation metrics per evaluation
    type (empty if the config has no ``data.val``). Writes ``log.jsonl``, ``checkpoint.pth`` (full state,
    for ``resume``), ``model_final.pth`` (model + meta) and ``config.py`` to ``work_dir``, which
    the run holds alone (``detzoo.engine.workdir``: locked; a fresh run into one with an earlier
    run's checkpoint needs ``overwrite``; Ctrl-C raises ``TrainingInterrupted``).

    A fresh run starts from ``load_from`` (a detzoo checkpoint dict: the detector that
    ``runtime.load_from`` names, as ``detzoo.api.train`` reads it) or else from the backbone's
    ``init``; ``resume`` continues from ``<work_dir>/checkpoint.pth`` instead. ``hooks``
    (``detzoo.engine.hooks.Hook``) join the trainer's own after its ``IterationTimer`` and
    before its logging, checkpoints and evaluation."""
    with claim_work_dir(Path(work_dir), resume=resume, overwrite=overwrite):
        return _train(cfg, work_dir=Path(work_dir), resume=resume, overwrite=overwrite, load_from=load_from,
                      hooks=hooks)


def _train(
    cfg: Mapping[str, Any], *, work_dir: Path, resume: bool, overwrite: bool, load_from: Mapping[str, Any] | None,
    hooks: Sequence[Hook],
) -> dict[str, Any]:
    check_keys("config", cfg, SECTIONS)
    optim, runtime, data = cfg["optim"], cfg["runtime"], cfg["data"]
    check_keys("optim", optim, OPTIM_KEYS)
    check_optim(optim)
    check_keys("runtime", runtime, RUNTIME_KEYS)
    check_not_none("runtime", runtime, [k for k in RUNTIME_KEYS if k not in RUNTIME_OPTIONAL])
    log = TrainingLog(work_dir, tensorboard=runtime["tensorboard"])
    device = distributed.init_from_env(runtime["device"])
    rank, world = distributed.rank(), distributed.world_size()
    amp_dtype = autocast_dtype(runtime["amp"], device)
    _seed_all(runtime["seed"] + rank)

    model = build_model(cfg["model"]).to(device)
    if runtime["compile"]:
        model.compile_network()
    train_set, val_set = _datasets(cfg, model)
    if not resume:
        _start_weights(model, cfg, load_from, train_set.class_names)

    def loader(epoch: int, skip_batches: int) -> Iterable[list[Sample]]:
        return build_train_loader(train_set, batch_size=data["images_per_gpu"], num_workers=data["num_workers"],
                                  seed=runtime["seed"], epoch=epoch, skip_batches=skip_batches, rank=rank,
                                  world_size=world)

    batch = data["images_per_gpu"] * world
    iters_per_epoch = len(loader(0, 0))
    schedule = resolve_schedule(cfg["schedule"], iters_per_epoch=iters_per_epoch, batch_size=batch)
    optimizer = torch.optim.SGD(
        param_groups(model, optim["weight_decay"], optim["norm_weight_decay"]),
        lr=scale_lr(optim["lr"], base_batch_size=optim["base_batch_size"], batch_size=batch),
        momentum=optim["momentum"],
    )
    # A pass-through unless fp16: then the loss is scaled and steps with inf/NaN gradients skipped.
    scaler = torch.amp.GradScaler(device.type, enabled=runtime["amp"] == "fp16")
    start = _resume(work_dir / CHECKPOINT, model, optimizer, scaler, cfg=cfg) if resume else 0
    # built after resuming, from the config: the lr at each iteration is its schedule's
    scheduler = WarmupMultiStepLR(optimizer, steps=schedule.steps, gamma=optim["gamma"],
                                  warmup_iters=optim["warmup_iters"], warmup_factor=optim["warmup_factor"],
                                  last_epoch=start - 1)
    meta = _checkpoint_meta(cfg, train_set)
    if distributed.is_main():
        if overwrite:  # only now, with the config, data and model built: a mistake in them costs no earlier run
            remove_earlier_run(work_dir)
        log.begin(start)
        work_dir.mkdir(parents=True, exist_ok=True)
        (work_dir / "config.py").write_text(dump_config(dict(cfg)))

    def evaluation() -> dict[str, dict[str, float]]:
        return evaluate(model, val_set, cat_ids=train_set.cat_ids, num_workers=data["num_workers"], amp=runtime["amp"])

    evaluator = EvalHook(evaluation, log, interval=runtime["eval_interval"]) if val_set is not None else None
    checkpointer = Checkpointer(work_dir / CHECKPOINT, work_dir / FINAL, interval=runtime["checkpoint_interval"],
                                meta=meta, lr=optim["lr"], saved=start if resume else None)
    Trainer(
        model, optimizer, scheduler, scaler, loader=loader, iters_per_epoch=iters_per_epoch, start_iter=start,
        max_iter=schedule.max_iters, grad_clip=optim["grad_clip"], amp_dtype=amp_dtype,
        hooks=[IterationTimer(), *hooks, LogWriter(log, interval=runtime["log_interval"]), checkpointer,
               *([evaluator] if evaluator else [])],
    ).train()
    return evaluator.metrics if evaluator else {}


def _datasets(cfg: Mapping[str, Any], model: DetectionModel) -> tuple[CocoDataset, CocoDataset | None]:
    """The training set of ``cfg`` for ``model`` and its validation set (None without
    ``data.val`` or with ``data.val=None``, as mmdetection's ``val_dataloader=None``), both
    checked against the model's classes now, before any training."""
    data, seed = cfg["data"], cfg["runtime"]["seed"]
    targets = model_targets(model.outputs)
    train_set = build_dataset(data, "train", model.pixel_format, train=True, seed=seed, **targets)
    if not model.is_proposal_generator and len(train_set.class_names) != model.num_classes:
        key = num_classes_key(cfg["model"])
        raise ConfigError(
            f"{key} is {model.num_classes} but {data['train']['ann_file']} has "
            f"{len(train_set.class_names)} categories; set --set {key}={len(train_set.class_names)}"
        )
    val_set = None if data.get("val") is None else build_dataset(data, "val", model.pixel_format, train=False,
                                                                 **targets)
    if val_set is not None and not model.is_proposal_generator:  # now, not at the first evaluation
        compare_classes(train_set.cat_ids, train_set.class_names, train_set.ann_file, val_set)
    return train_set, val_set


def _resume(path: Path, model: DetectionModel, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, *,
            cfg: Mapping[str, Any]) -> int:
    """Restore the training checkpoint at ``path`` (``resume_state``, this rank's RNG state,
    the GradScaler's); return its iteration."""
    state = load_checkpoint(path, map_location=model.device)
    start = resume_state(state, path, model=model, optimizer=optimizer, cfg=cfg)
    set_rng_state(rank_rng_state(state["rng"], path=path, rank=distributed.rank(), world=distributed.world_size()))
    if state.get("scaler"):  # empty when written without fp16: the scaler starts afresh
        scaler.load_state_dict(state["scaler"])
    return start
