"""Renaming another toolbox's state dict by explicit rules, shared by every converter.

A rule is ``(pattern, replacement)``: the first rule whose regex pattern matches a key
rewrites it (``re.sub`` once, so the replacement may be a template or a function of the
match). A key no rule renames is an error that lists it, and so are two keys landing on
one name, unless the toolbox stores one tensor under several names (``shared``) and the
copies are equal.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Rule = tuple[str, str | Callable[[re.Match], str]]


def rename(key: str, rules: Sequence[Rule]) -> str | None:
    """``key`` rewritten by the first rule whose pattern matches it; None if none does."""
    for pattern, replacement in rules:
        if re.match(pattern, key):
            return re.sub(pattern, replacement, key, count=1)
    return None


def rename_keys(
    state: Mapping[str, Any], new_name: Callable[[str], str | None], toolbox: str, *, shared: bool = False
) -> dict[str, Any]:
    """``state`` with every key through ``new_name``. Errors: the keys it has no name for
    (listed), and two keys that would land on one name, unless ``shared`` and they hold
    equal tensors (then one copy is kept)."""
    out: dict[str, Any] = {}
    origin: dict[str, str] = {}
    unmatched = []
    for key, value in state.items():
        new = new_name(key)
        if new is None:
            unmatched.append(key)
        elif new not in out:
            out[new], origin[new] = value, key
        elif not shared:
            raise ValueError(f"{toolbox} checkpoint keys {origin[new]} and {key} would both become {new}")
        elif not (out[new].shape == value.shape and bool((out[new] == value).all())):
            raise ValueError(
                f"{toolbox} checkpoint keys {origin[new]} and {key} share {new} but hold different tensors"
            )
    if unmatched:
        shown = ", ".join(unmatched[:8]) + (", ..." if len(unmatched) > 8 else "")
        raise ValueError(f"{len(unmatched)} {toolbox} checkpoint key(s) have no detzoo counterpart: {shown}")
    return out
