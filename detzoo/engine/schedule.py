"""Training schedules (``1x``, ``2x``, ...), the linear lr scaling rule, and the
warmup + multi-step lr scheduler, all counted in iterations."""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from detzoo.config import ConfigError

# A spec counts either epochs, or iterations (at ``batch_size`` images per iteration when
# given, scaled to the actual batch size; as is otherwise). Steps use the same unit.
SCHEDULES: dict[str, dict] = {
    "1x": {"epochs": 12, "steps": (8, 11)},
    "2x": {"epochs": 24, "steps": (16, 22)},
    "3x": {"epochs": 36, "steps": (28, 34)},
    "20_23_24e": {"epochs": 24, "steps": (20, 23)},
    "50e": {"epochs": 50, "steps": (30, 40)},
    "s1x": {"iters": 130_000, "steps": (100_000, 120_000), "batch_size": 16},  # Detectron
}
_SPEC_KEYS = {"epochs", "iters", "steps", "batch_size"}


@dataclass(frozen=True)
class Schedule:
    """Total iterations and the iterations at which the lr is multiplied by gamma."""

    max_iters: int
    steps: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.max_iters <= 0:
            raise ConfigError(f"schedule: max_iters must be positive, got {self.max_iters}")
        increasing = list(self.steps) == sorted(set(self.steps))
        if not increasing or any(not 0 < s < self.max_iters for s in self.steps):
            raise ConfigError(
                f"schedule: steps must be increasing and inside (0, max_iters={self.max_iters}), "
                f"got {self.steps}"
            )


def resolve_schedule(name_or_spec: str | Mapping, *, iters_per_epoch: int, batch_size: int) -> Schedule:
    """Turn a schedule name from ``SCHEDULES`` or a spec dict ``{"epochs": E, "steps": (a, b)}``
    / ``{"iters": N, "steps": (a, b)[, "batch_size": B]}`` into iterations."""
    if iters_per_epoch <= 0 or batch_size <= 0:
        raise ConfigError(
            f"schedule: iters_per_epoch and batch_size must be positive, got {iters_per_epoch} and {batch_size}"
        )
    if isinstance(name_or_spec, str):
        if name_or_spec not in SCHEDULES:
            raise ConfigError(f"unknown schedule {name_or_spec!r}; valid names: {', '.join(SCHEDULES)}")
        spec = SCHEDULES[name_or_spec]
    else:
        spec = name_or_spec
    unknown = sorted(set(spec) - _SPEC_KEYS)
    if unknown:
        raise ConfigError(
            f"schedule spec {dict(spec)} has unknown keys {unknown}; valid keys: {sorted(_SPEC_KEYS)}"
        )
    one_unit = ("epochs" in spec) != ("iters" in spec)
    if not one_unit or "steps" not in spec or ("batch_size" in spec and "epochs" in spec):
        raise ConfigError(
            f"schedule spec {dict(spec)} needs 'steps' and exactly one of 'epochs' or 'iters' "
            "('batch_size' goes with 'iters' only)"
        )
    if "epochs" in spec:
        scale = iters_per_epoch
        total = spec["epochs"]
    else:
        scale = spec.get("batch_size", batch_size) / batch_size
        total = spec["iters"]
    return Schedule(max_iters=round(total * scale), steps=tuple(round(s * scale) for s in spec["steps"]))


def scale_lr(base_lr: float, *, base_batch_size: int, batch_size: int) -> float:
    """Linear scaling rule (Goyal et al. 2017): lr proportional to the total batch size."""
    if base_batch_size <= 0 or batch_size <= 0:
        raise ConfigError(f"batch sizes must be positive, got base (optim.base_batch_size) {base_batch_size}, "
                          f"actual {batch_size}")
    return base_lr * batch_size / base_batch_size


def _number(value: object, *, least: float, above: bool = False) -> bool:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return ok and (value > least if above else value >= least)


# What each value of a config's ``optim`` section must be. torch's SGD checks some itself,
# but reports the lr after scaling (``scale_lr``) and names no key.
_OPTIM_VALUES: dict[str, tuple[str, Callable[[object], bool]]] = {
    "lr": ("a positive number", lambda v: _number(v, least=0, above=True)),
    "base_batch_size": ("a positive integer", lambda v: isinstance(v, int) and _number(v, least=1)),
    "momentum": ("a number >= 0", lambda v: _number(v, least=0)),
    "weight_decay": ("a number >= 0", lambda v: _number(v, least=0)),
    "norm_weight_decay": ("None or a number >= 0", lambda v: v is None or _number(v, least=0)),
    "warmup_iters": ("an integer >= 0", lambda v: isinstance(v, int) and _number(v, least=0)),
    "warmup_factor": ("a number >= 0", lambda v: _number(v, least=0)),
    "gamma": ("a positive number", lambda v: _number(v, least=0, above=True)),
    "grad_clip": ("None or a number >= 0", lambda v: v is None or _number(v, least=0)),
}


def check_optim(optim: Mapping[str, object]) -> None:
    """A ``ConfigError`` naming the first value of a config's ``optim`` section that is
    not what ``_OPTIM_VALUES`` says (a negative lr, a string)."""
    for key, (what, ok) in _OPTIM_VALUES.items():
        if key in optim and not ok(optim[key]):
            raise ConfigError(f"optim.{key} must be {what}, got {optim[key]!r}")


class WarmupMultiStepLR(LambdaLR):
    """Per-iteration lr factor: linear warmup from ``warmup_factor`` to 1 over
    ``warmup_iters`` (detectron2's "linear"), times ``gamma`` per step already reached."""

    def __init__(
        self,
        optimizer: Optimizer,
        *,
        steps: Sequence[int],
        gamma: float = 0.1,
        warmup_iters: int = 500,
        warmup_factor: float = 0.001,
        last_epoch: int = -1,
    ) -> None:
        if list(steps) != sorted(steps):
            raise ValueError(f"WarmupMultiStepLR steps must be increasing, got {tuple(steps)}")
        # plain attributes, so LambdaLR.state_dict saves them and load_state_dict restores them
        self.steps = tuple(int(s) for s in steps)
        self.gamma = gamma
        self.warmup_iters = warmup_iters
        self.warmup_factor = warmup_factor
        super().__init__(optimizer, self.factor, last_epoch=last_epoch)

    def factor(self, iteration: int) -> float:
        """lr multiplier at ``iteration`` (0-based)."""
        decay = self.gamma ** bisect_right(self.steps, iteration)
        if iteration >= self.warmup_iters:
            return decay
        alpha = iteration / self.warmup_iters
        return (self.warmup_factor * (1 - alpha) + alpha) * decay
