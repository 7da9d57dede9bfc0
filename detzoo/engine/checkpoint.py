"""Checkpoint files: atomic saving, weights-only loading, RNG state and publishing.

Loading never unpickles arbitrary objects: ``.pth`` files go through
``torch.load(weights_only=True)``, so a checkpoint holds tensors and plain Python data, and
``.pkl`` files (Detectron's Caffe2 blobs, detectron2's model zoo) through ``load_pickle``.

A pickle names the Python callables that rebuild its objects, and ``pickle.load`` calls
whatever it names (``os.system`` included). ``load_pickle`` unpickles with an allowlist:
the numpy functions and classes that rebuild arrays, dtypes and numpy scalars (under both
``numpy.core`` and numpy 2's ``numpy._core``), ``_codecs.encode`` (how protocol-2 pickles
of Python 3 store bytes) and the plain containers without opcodes of their own
(``collections.OrderedDict``, ``set``, ``frozenset``; also as Python 2 spells them). Any
other global is refused with a ``CheckpointError`` that names the file and the global,
before anything is called. A ``.pth`` that torch's weights-only loader refuses is reported
as refused, naming the callables its pickle names (read with ``pickletools``, nothing
run), not as corrupt; only a file that is not a readable pickle is "truncated or
corrupt". Python 2 pickles (Detectron's) are read with ``encoding="latin1"``, which numpy
needs to rebuild arrays from Python 2 byte strings. Published files follow mmdetection's
naming, ``<name>-<sha256[:8]>.pth``, and ``detzoo.download.fetch_checkpoint`` checks that
prefix the way ``torch.hub`` does.
"""

from __future__ import annotations

import codecs
import collections
import os
import pickle
import pickletools
import random
import re
import zipfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from detzoo.download import sha256_file
from detzoo.errors import CheckpointError, InputError, MissingFileError
from detzoo.files import atomic_write
from detzoo.layers.state import state_mismatches


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` with ``torch.save`` atomically (temp file + fsync + rename)."""
    with atomic_write(path) as f:
        torch.save(state, f)


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint: ``.pkl`` with ``load_pickle``, anything else with
    ``torch.load(weights_only=True)``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint file not found: {path}")
    if path.suffix == ".pkl":
        state = load_pickle(path)
    else:
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as e:  # torch raises many types for a bad file; which kind it is, the pickle says
            raise _load_failure(path, e) from e
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, expected a dict")
    return state


def _pickled_globals(path: Path) -> tuple[list[str], bool]:
    """The ``module.name`` callables that the pickle of checkpoint ``path`` (the ``data.pkl``
    of torch's zip format, else the whole file) names, read with ``pickletools`` so that
    nothing is run, and whether the pickle was read to its end."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
        else:
            data = path.read_bytes()
    except (StopIteration, zipfile.BadZipFile, OSError):
        return [], False
    names: list[str] = []
    strings: list[str] = []  # the strings pushed so far: STACK_GLOBAL (protocol 4+) takes the last two
    memo: dict[int, str] = {}  # the memoized ones, which GET pushes again
    memo_keys: set[int] = set()  # every memo index in use (MEMOIZE takes the next one)
    top: str | None = None  # the string on top of the stack, if the last opcode left one there
    try:
        for opcode, arg, _ in pickletools.genops(data):
            name, was_top, top = opcode.name, top, None
            if name in ("GLOBAL", "INST"):  # protocols 0-3: "module name"
                names.append(arg.replace(" ", "."))
            elif name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(f"{strings[-2]}.{strings[-1]}")
            elif name.endswith(("UNICODE", "UNICODE8", "STRING")):
                top = str(arg)
                strings.append(top)
            elif name == "MEMOIZE" or name.endswith("PUT"):
                index = len(memo_keys) if name == "MEMOIZE" else arg
                memo_keys.add(index)
                if was_top is not None:
                    memo[index] = was_top
                top = was_top
            elif name.endswith("GET") and arg in memo:
                top = memo[arg]
                strings.append(top)
    except Exception:  # a truncated or corrupt pickle: what was named before the damage still counts
        return names, False
    return names, True


def _load_failure(path: Path, error: Exception) -> CheckpointError:
    """Why ``torch.load(path, weights_only=True)`` failed: a pickle that names callables
    other than torch's and the plain containers (it would run code: refused, and said so),
    one that torch's weights-only unpickler refused anyway, or a truncated / corrupt file."""
    # the first sentence of the useful message (the weights-only unpickler wraps it in a long text)
    detail = re.split(r"\. (?=[A-Z])", (str(error.__context__ or error) or type(error).__name__).splitlines()[0])[0]
    names, complete = _pickled_globals(path)
    unsafe = list(dict.fromkeys(n for n in names if n.split(".")[0] != "torch" and
                                tuple(n.rsplit(".", 1)) not in ALLOWED_GLOBALS))
    if unsafe:
        return CheckpointError(
            f"checkpoint {path} was refused: its pickle calls {', '.join(unsafe[:3])}, which loading would run, "
            "so it may contain code (a malicious file?); detzoo only loads weights-only checkpoints "
            "(tensors and plain data)"
        )
    if complete and isinstance(error, pickle.UnpicklingError):
        return CheckpointError(
            f"checkpoint {path} was refused by torch's weights-only loader ({detail}); "
            "detzoo only loads weights-only checkpoints (tensors and plain data)"
        )
    return CheckpointError(
        f"checkpoint {path} could not be read (truncated or corrupt?): {type(error).__name__}: {detail}"
    )


_ARRAY = np.zeros(1)
_MULTIARRAY = ("numpy.core.multiarray", "numpy._core.multiarray")  # numpy 1, numpy 2
_NUMERIC = ("numpy.core.numeric", "numpy._core.numeric")
# (module, name) as a pickle spells it -> the object it may stand for. The numpy
# functions are taken from numpy's own reductions, so they are the ones this numpy uses
# whichever module path the file was written with.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    **{(module, "_reconstruct"): _ARRAY.__reduce__()[0] for module in _MULTIARRAY},
    **{(module, "scalar"): np.float32(0).__reduce__()[0] for module in _MULTIARRAY},
    **{(module, "_frombuffer"): _ARRAY.__reduce_ex__(5)[0] for module in _NUMERIC},  # protocol 5
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
    ("collections", "OrderedDict"): collections.OrderedDict,
    **{(module, "set"): set for module in ("builtins", "__builtin__")},
    **{(module, "frozenset"): frozenset for module in ("builtins", "__builtin__")},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path) -> None:
        super().__init__(file, encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise CheckpointError(
                f"{self.path} was refused: it holds Python objects detzoo will not run (global {module}.{name}); "
                "detzoo reads only numpy arrays, numpy scalars and plain containers from .pkl files"
            ) from None


def load_pickle(path: str | Path) -> Any:
    """The object pickled in ``path``, built only from numpy arrays, numpy scalars and
    plain containers; a file that names anything else is a ``CheckpointError``, and so is
    an unreadable one."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint file not found: {path}")
    with open(path, "rb") as f:
        try:
            return _RestrictedUnpickler(f, path).load()
        except CheckpointError:
            raise
        except Exception as e:  # pickle raises many types for a corrupt file; all mean the same here
            raise CheckpointError(
                f"checkpoint {path} could not be read as a pickle (truncated or corrupt?): {type(e).__name__}: {e}"
            ) from e


def get_rng_state() -> dict:
    """State of python ``random``, numpy's global RNG, torch CPU and (if present) CUDA,
    as plain lists/numbers/tensors so that weights-only loading accepts it."""
    version, internal, gauss_next = random.getstate()
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
        "numpy": {
            "keys": keys.tolist(),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what ``get_rng_state`` returned. CUDA states are set for the devices present."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    nps = state["numpy"]
    keys = np.array(nps["keys"], dtype=np.uint32)
    np.random.set_state(("MT19937", keys, nps["pos"], nps["has_gauss"], nps["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if torch.cuda.is_available():
        for index, cuda_state in enumerate(state.get("cuda", [])[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), index)


def load_state(model: torch.nn.Module, state: Mapping[str, Tensor], source: str | Path) -> None:
    """Load ``state`` strictly into ``model``; a mismatch is a ``CheckpointError`` naming
    ``source`` and the first missing / unexpected keys and mismatched shapes. BN's
    ``num_batches_tracked`` counters are bookkeeping, not weights: one side may lack them
    (frozen BN has none; converters drop them)."""
    counter = "num_batches_tracked"
    own = model.state_dict()
    state = {**{k: v for k, v in own.items() if k.endswith(counter)},
             **{k: v for k, v in state.items() if not k.endswith(counter) or k in own}}
    problems = state_mismatches(own, state)
    if problems:
        raise CheckpointError(f"checkpoint {source} does not fit the model of its config: " + "; ".join(problems))
    model.load_state_dict(state)


def publish_checkpoint(
    src: str | Path, out_dir: str | Path, *, name: str, keep_keys: Sequence[str] = ("model", "meta")
) -> Path:
    """Keep only ``keep_keys`` of checkpoint ``src`` (drop optimizer/scheduler state) and
    write it as ``out_dir/<name>-<sha256[:8]>.pth``, the hash being that of the written file."""
    if not name or Path(name).name != name or name.endswith(".pth"):
        raise InputError(f"publish name must be a bare file stem without '.pth', got {name!r}")
    state = load_checkpoint(src)
    missing = [k for k in keep_keys if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {src} lacks keys {missing}; it has {sorted(state)}")
    staging = Path(out_dir) / f".{name}.unpublished.pth"
    save_checkpoint(staging, {k: state[k] for k in keep_keys})
    final = staging.with_name(f"{name}-{sha256_file(staging)[:8]}.pth")
    os.replace(staging, final)
    return final
