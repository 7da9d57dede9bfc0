"""Comparing a state dict with the one a module holds, for loaders that refuse a mismatch."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import Tensor


def state_mismatches(
    own: Mapping[str, Tensor], state: Mapping[str, Tensor], *, may_be_unused: Callable[[str], bool] = lambda key: False
) -> list[str]:
    """What keeps ``state`` from loading strictly where ``own`` is held: ``"N missing: a, b,
    ..."``, ``"N unexpected: ..."`` (keys for which ``may_be_unused`` is true left out) and
    ``"N with another shape: key (theirs) vs (ours)"``, the first five of each; empty when it fits."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own and not may_be_unused(k)]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    return [f"{len(items)} {what}: {', '.join(items[:5])}{', ...' if len(items) > 5 else ''}"
            for what, items in (("missing", missing), ("unexpected", unexpected), ("with another shape", shapes))
            if items]
