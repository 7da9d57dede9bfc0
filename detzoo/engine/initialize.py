"""Where a training run's weights start: the backbone's ImageNet weights
(``model.backbone.init``), or a whole trained detector (``runtime.load_from``, fine-tuning).

* ``init_backbone``: fetch the file that ``init`` names into the weights cache (or take a
  local file), check its hash on every use, turn its layout into detzoo's names and load it
  strictly (``detzoo.backbones.imagenet``). Frozen stages and frozen BN were made frozen
  when the backbone was built; loading fills them, so they keep the file's weights and
  statistics for the whole run.
* ``transfer_weights``: detectron2's ``DetectionCheckpointer`` for a detector whose heads do
  not fit, with the rows of class-dependent layers (``DetectionModel.class_rows``) taken by
  class name: a dataset whose classes are among the checkpoint's keeps what it learnt of
  them, whatever their order or ids; new classes' rows, and parts the checkpoint lacks (a
  mask branch when starting from Faster R-CNN), keep the fresh model's initialisation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from torch import Tensor

from detzoo.backbones.imagenet import (
    WEIGHTS,
    check_conventions,
    detect_layout,
    is_weights_name,
    load_resnet_state,
    to_resnet_state,
)
from detzoo.detectors.model import DetectionModel
from detzoo.download import cache_dir, fetch_checkpoint
from detzoo.engine.checkpoint import load_checkpoint
from detzoo.errors import CheckpointError
from detzoo.structures import ClassRows

_COUNTER = "num_batches_tracked"


def _shown(items: Sequence[str], limit: int = 6) -> str:
    return ", ".join(items[:limit]) + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def init_backbone(model: DetectionModel) -> str | None:
    """Load the ImageNet weights that ``model.backbone.init`` names into the model (its
    backbone, and a C4 model's res5); return the line to log (None when ``init`` is None)."""
    backbone = model.backbone
    init = backbone.init
    if init is None:
        return None
    if is_weights_name(init):
        weights = WEIGHTS[init]
        check_conventions(weights, init, style=backbone.style, conv_ws=backbone.conv_ws)
        path = fetch_checkpoint(weights.url, cache_dir=cache_dir(), sha256=weights.sha256, md5_url=weights.md5_url)
        checkpoint, layout, source = load_checkpoint(path), weights.layout, f"{init} ({path})"
    else:
        path = Path(init).expanduser()
        if not path.is_file():
            raise CheckpointError(f"model.backbone.init: no such file {path}, and not a weights name "
                                  "(those look like torchvision://resnet50; see detzoo.backbones.imagenet.WEIGHTS)")
        checkpoint = load_checkpoint(path)
        layout, source = detect_layout(checkpoint), str(path)
    state = to_resnet_state(checkpoint, layout)
    unused = load_resnet_state(model.pretrained_modules(), state, source)
    loaded = sum(1 for k in state if k not in unused and not k.endswith(_COUNTER))
    return (f"backbone init: loaded {loaded} tensors of the ImageNet weights {source} ({layout} layout)"
            + (f"; unused: {_shown(unused)} (the classifier and stages this model does not build)" if unused else ""))


def _class_index(new: Sequence[str], old: Sequence[str] | None, same_count: bool) -> list[int | None]:
    """For each new class, its index among the checkpoint's classes (None: it has none).
    A checkpoint that names no classes gives its rows by index when it has as many classes."""
    if old is None:
        return list(range(len(new))) if same_count else [None] * len(new)
    position = {name: i for i, name in enumerate(old)}
    return [position.get(name) for name in new]


def _blocks(size: int, rows: ClassRows, count: int) -> int | None:
    """How many blocks (anchors) of ``count`` classes a dimension of ``size`` holds, None if it does not divide."""
    groups, rest = divmod(size - rows.extra, count * rows.width)
    return groups if count and not rest and groups > 0 else None


def _remap(fresh: Tensor, old: Tensor, rows: ClassRows, index: Sequence[int | None], old_count: int) -> Tensor:
    """``fresh`` with the rows of each class whose ``index`` in the checkpoint is known, and
    the extra rows, taken from ``old``."""
    out = fresh.clone()
    dim, width, count = rows.dim, rows.width, len(index)
    groups = _blocks(out.shape[dim], rows, count)
    for group in range(groups):
        for new, source in enumerate(index):
            if source is not None:
                out.narrow(dim, (group * count + new) * width, width).copy_(
                    old.narrow(dim, (group * old_count + source) * width, width))
    if rows.extra:
        out.narrow(dim, groups * count * width, rows.extra).copy_(
            old.narrow(dim, groups * old_count * width, rows.extra))
    return out


def _part(key: str) -> str:
    """The part of a detector a key belongs to: a mask or keypoint branch, else its first module."""
    names = key.split(".")
    return ".".join(names[:2]) if names[:2] in (["roi_heads", "mask"], ["roi_heads", "keypoint"]) else names[0]


def _shape(key: str, old: Tensor, new: Tensor) -> str:
    return f"{key} {tuple(old.shape)} vs {tuple(new.shape)}"


def transfer_weights(
    model: DetectionModel, checkpoint: Mapping[str, object], *, class_names: Sequence[str], source: str
) -> str:
    """Load a trained detector's weights into ``model`` for fine-tuning on ``class_names``;
    return the line to log: how many tensors were loaded, which were initialised afresh and
    why, and which of the checkpoint's were left unused.

    Class-dependent rows follow the classes by name when the checkpoint's meta names its
    classes (else by index, if it has as many); a class the checkpoint lacks keeps the fresh
    rows. Keypoint rows are taken when the checkpoint has as many keypoints, else left fresh.
    A part of the detector that the checkpoint has no tensor of (a mask branch, a dense head)
    stays fresh; any other missing tensor or shape mismatch is a ``CheckpointError`` naming
    the keys."""
    state = checkpoint.get("model")
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{source} holds no detector weights ('model')")
    old_names = (checkpoint.get("meta") or {}).get("class_names")
    old_count = len(old_names) if old_names else len(class_names)
    own = model.state_dict()
    class_rows = model.class_rows()
    present = {_part(k) for k in state}
    new_state: dict[str, Tensor] = {}
    fresh_parts: set[str] = set()
    fresh_rows: dict[str, list[str]] = {}
    missing, shapes = [], []
    for key, value in own.items():
        old, rows = state.get(key), class_rows.get(key)
        new_state[key] = value
        if old is None:
            if key.endswith(_COUNTER):
                continue
            if _part(key) in present:
                missing.append(key)
            else:
                fresh_parts.add(_part(key))
        elif key.endswith(_COUNTER) or rows is None:
            if old.shape != value.shape:
                shapes.append(_shape(key, old, value))
            new_state[key] = old
        elif rows.follows == "keypoints":
            if old.shape == value.shape:
                new_state[key] = old
            else:
                why = (f"all rows (the checkpoint has {old.shape[rows.dim]} keypoints, "
                       f"the model {value.shape[rows.dim]})")
                fresh_rows.setdefault(why, []).append(key)
        elif (old.shape[:rows.dim] + old.shape[rows.dim + 1:] != value.shape[:rows.dim] + value.shape[rows.dim + 1:]
              or _blocks(old.shape[rows.dim], rows, old_count)
              != _blocks(value.shape[rows.dim], rows, len(class_names))):
            shapes.append(_shape(key, old, value))
        else:
            index = _class_index(class_names, old_names, old.shape == value.shape)
            new_state[key] = _remap(value, old, rows, index, old_count)
            new = [n for n, i in zip(class_names, index) if i is None]
            if new:
                fresh_rows.setdefault(f"rows of {_shown(new, 4)} (not among the checkpoint's classes)", []).append(key)
    if missing or shapes:
        problems = [f"{what}: {_shown(items, 4)}" for what, items in
                    (("missing in a part it has", missing), ("with another shape", shapes)) if items]
        raise CheckpointError(f"cannot fine-tune from {source}: " + "; ".join(problems))
    model.load_state_dict(new_state)
    unused = [k for k in state if k not in own and not k.endswith(_COUNTER)]
    loaded = sum(1 for k in own if k in state and not k.endswith(_COUNTER))
    how = "by class name" if old_names else "by index (the checkpoint names no classes)"
    notes = [f"loaded {loaded} tensors from {source}, class rows {how}"]
    if fresh_parts:
        notes.append(f"initialised afresh: {', '.join(sorted(fresh_parts))} (not in the checkpoint)")
    notes += [f"initialised afresh: {why} in {_shown(keys, 2)}" for why, keys in fresh_rows.items()]
    if unused:
        notes.append(f"unused from the checkpoint: {_shown(unused)}")
    return "; ".join(notes)
