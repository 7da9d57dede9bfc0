"""The training loop's hooks, as detectron2's ``HookBase`` and ``engine/hooks.py``: a
``Hook`` is called by the trainer (``detzoo.engine.trainer.Trainer``, its ``self.trainer``)
before training, before each iteration, after the iteration's forward, after its backward,
after the iteration, and after training. The trainer's own: ``IterationTimer``,
``LogWriter`` (log.jsonl, TensorBoard, the progress bar), ``Checkpointer`` (checkpoint.pth,
model_final.pth and the guards against a non-finite loss or weight) and ``EvalHook``."""

from __future__ import annotations

import importlib.util
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from tqdm import tqdm

from detzoo.config import ConfigError
from detzoo.engine import distributed
from detzoo.engine.checkpoint import get_rng_state, save_checkpoint
from detzoo.engine.workdir import LOG, TENSORBOARD
from detzoo.errors import UserError
from detzoo.evaluation.coco import format_table
from detzoo.files import atomic_write


class Hook:
    """Does nothing at each point of the loop; a hook overrides the points it acts at. The
    trainer's state it reads: ``iter`` (the iterations done: in ``after_step``, the one just
    run, counted from 1), ``start_iter``, ``max_iter``, ``epoch``, ``model``, ``optimizer``,
    ``scaler``, ``data_time`` (the seconds the iteration waited for its batch) and
    ``scalars`` (the iteration's numbers for the log: ``loss`` and each loss term from the
    forward on)."""

    trainer: Any  # the Trainer that runs the hook, set when it takes it

    def before_train(self) -> None:
        pass

    def before_step(self) -> None:
        pass

    def after_forward(self) -> None:
        """After the forward and its losses, before the backward: the weights are still the last step's."""

    def after_backward(self) -> None:
        """After the backward (and the gradient clipping), before the optimizer step."""

    def after_step(self) -> None:
        pass

    def after_train(self) -> None:
        """After the last iteration, and when training stops with an exception."""


class IterationTimer(Hook):
    """``time`` in the iteration's scalars: the seconds from this hook's ``before_step`` to
    its ``after_step`` (first of the trainer's hooks: the batch, the forward, backward and
    update, not the other hooks' logging, saving or evaluation after it); ``data_time``:
    the part of it spent waiting for the batch."""

    def before_step(self) -> None:
        self._start = time.perf_counter()

    def after_step(self) -> None:
        self.trainer.scalars.update(time=time.perf_counter() - self._start, data_time=self.trainer.data_time)


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


class LogWriter(Hook):
    """Every ``interval`` iterations and at the last, one record to ``log``: the iteration,
    its epoch, its lr, the mean over the processes of the scalars of the iterations since
    the last record (after the ``IterationTimer``), the ETA and, on a GPU, the peak CUDA
    memory since the last record; the progress bar. Closes ``log`` after training."""

    def __init__(self, log: TrainingLog, *, interval: int) -> None:
        self.log = log
        self.interval = interval

    def before_train(self) -> None:
        trainer = self.trainer
        self._bar = tqdm(total=trainer.max_iter, initial=trainer.start_iter, desc="train",
                         disable=not distributed.is_main())
        self._window: list[dict[str, float]] = []

    def before_step(self) -> None:
        self._lr = self.trainer.optimizer.param_groups[0]["lr"]  # this step's: the scheduler steps after it

    def after_step(self) -> None:
        trainer, it = self.trainer, self.trainer.iter
        self._window.append(dict(trainer.scalars))
        self._bar.update(1)
        if it % self.interval and it != trainer.max_iter:
            return
        mean = distributed.reduce_mean({k: float(np.mean([w[k] for w in self._window])) for k in self._window[0]})
        self._window = []
        record = {"iter": it, "epoch": trainer.epoch, "lr": self._lr, **mean,
                  "eta_s": mean["time"] * (trainer.max_iter - it)}
        device = trainer.model.device
        if device.type == "cuda":
            record["memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
            torch.cuda.reset_peak_memory_stats(device)
        self.log.write(record)
        self._bar.set_postfix(loss=f"{mean['loss']:.3f}", lr=f"{self._lr:.2e}", s_iter=f"{mean['time']:.2f}")

    def after_train(self) -> None:
        self._bar.close()
        self.log.close()


class NonFiniteLossError(UserError, FloatingPointError):
    """The loss (or, at a checkpoint, a weight) became NaN or infinite: training stopped
    before the bad state was saved. ``lr`` is the suggested (tenfold lower) ``optim.lr``;
    ``resumable``: this run wrote a checkpoint to resume from."""

    def __init__(self, message: str, *, lr: float, resumable: bool) -> None:
        super().__init__(message)
        self.lr = lr
        self.resumable = resumable


class Checkpointer(Hook):
    """The full training state in ``path`` (checkpoint.pth) every ``interval`` iterations and
    at the last (with ``meta``), the model and ``meta`` in ``final`` (model_final.pth) at
    the last; ``saved``: the iteration of this run's last checkpoint
    (None before the first). It never lets a non-finite state through: a NaN or infinite
    loss stops training before the optimizer steps, a non-finite weight before it is saved,
    with a ``NonFiniteLossError`` that says whether to resume from that checkpoint or start
    again, with a tenth of ``lr`` (the config's ``optim.lr``)."""

    def __init__(self, path: Path, final: Path, *, interval: int, meta: Mapping[str, Any], lr: float,
                 saved: int | None) -> None:
        self.path = path
        self.final = final
        self.interval = interval
        self.meta = meta
        self.lr = lr
        self.saved = saved

    def after_forward(self) -> None:
        scalars, it = self.trainer.scalars, self.trainer.iter
        if not math.isfinite(scalars["loss"]):
            terms = ", ".join(f"{k}={v:.4g}" for k, v in scalars.items() if k != "loss")
            raise self._non_finite(f"loss is {scalars['loss']} ({terms})", it + 1,
                                   weights_gave_it=self.saved == it)  # it: the weights' iteration

    def after_step(self) -> None:
        trainer, it = self.trainer, self.trainer.iter
        if it % self.interval == 0 or it == trainer.max_iter:
            self.save()
        if it == trainer.max_iter and distributed.is_main():  # before the final evaluation: it cannot cost it
            save_checkpoint(self.final, {"model": trainer.model.state_dict(), "meta": self.meta})

    def save(self) -> None:
        trainer, it = self.trainer, self.trainer.iter
        if not all(torch.isfinite(p).all() for p in trainer.model.parameters()):  # never save a broken state
            raise self._non_finite("a weight is not finite", it)
        rng = distributed.gather(get_rng_state())  # every rank's, for an exact resume under DDP
        if distributed.is_main():
            save_checkpoint(
                self.path,
                {
                    "model": trainer.model.state_dict(),
                    "optimizer": trainer.optimizer.state_dict(),
                    "iteration": it,
                    "rng": rng,
                    "scaler": trainer.scaler.state_dict(),
                    "meta": self.meta,
                },
            )
        self.saved = it

    def _non_finite(self, what: str, iteration: int, *, weights_gave_it: bool = False) -> NonFiniteLossError:
        """The ``NonFiniteLossError`` for ``what`` at ``iteration`` (as logged), saying how to go
        on: resume from this run's last checkpoint with a lower lr, or start again with one
        when there is none or when its weights gave the failing loss."""
        lr = self.lr / 10
        if self.saved is None:
            advice = f"no checkpoint of this run was written yet: start again with a lower lr, e.g. optim.lr={lr:g}"
        elif weights_gave_it:
            advice = (f"the last checkpoint, {self.path} (iteration {self.saved}), is left as it was, but its weights "
                      f"give this loss: start again with a lower lr, e.g. optim.lr={lr:g}")
        else:
            advice = (f"the last good checkpoint, {self.path} (iteration {self.saved}), is left as it was: "
                      f"resume from it with a lower lr, e.g. optim.lr={lr:g}")
        return NonFiniteLossError(f"{what} at iteration {iteration}; training stopped; {advice}",
                                  lr=lr, resumable=self.saved is not None and not weights_gave_it)


class EvalHook(Hook):
    """Every ``interval`` iterations (0: never) and at the last: ``evaluate()`` on every
    process (of the model rank 0 saves: DDP's buffers broadcast first), its metrics written
    to ``log`` and printed; ``metrics``: the last evaluation's (empty before one)."""

    def __init__(self, evaluate: Callable[[], dict[str, dict[str, float]]], log: TrainingLog, *,
                 interval: int) -> None:
        self.evaluate = evaluate
        self.log = log
        self.interval = interval
        self.metrics: dict[str, dict[str, float]] = {}

    def after_step(self) -> None:
        it = self.trainer.iter
        if it != self.trainer.max_iter and not (self.interval and it % self.interval == 0):
            return
        distributed.broadcast_buffers(self.trainer.model)
        self.metrics = self.evaluate()
        self.log.write({"iter": it, "eval": self.metrics})
        if distributed.is_main():
            for iou_type, values in self.metrics.items():
                tqdm.write(f"iteration {it}: {iou_type}\n{format_table(values)}")
