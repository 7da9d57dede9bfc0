"""Checkpoint files: atomic saving, weights-only loading, RNG state, fetching and publishing.

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
naming, ``<name>-<sha256[:8]>.pth``, and ``fetch_checkpoint`` checks that prefix the way
``torch.hub`` does.
"""

from __future__ import annotations

import codecs
import collections
import hashlib
import os
import pickle
import pickletools
import random
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.error import HTTPError
from urllib.parse import unquote, urlparse
from urllib.request import urlopen

import numpy as np
import torch
from torch import Tensor

from detzoo.errors import InputError, MissingFileError, UserError
from detzoo.files import atomic_write
from detzoo.layers.state import state_mismatches

_HASH_IN_NAME = re.compile(r".+-([0-9a-f]{8})\.pth")
_URL_SCHEMES = ("http", "https", "file")


class CheckpointError(UserError, RuntimeError):
    """A checkpoint file is unreadable, refused, or fails its hash check."""


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


def file_hash(path: str | Path, algorithm: str) -> str:
    """Hex digest of a file by the ``hashlib`` algorithm named (``sha256``, ``md5``), read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file."""
    return file_hash(path, "sha256")


def _check_hash(path: Path, expected_prefix: str, *, remove_on_mismatch: bool) -> str:
    actual = sha256_file(path)
    if not actual.startswith(expected_prefix.lower()):
        if remove_on_mismatch:
            path.unlink(missing_ok=True)
        raise CheckpointError(
            f"sha256 mismatch for {path}: expected prefix {expected_prefix}, "
            f"got {actual[: len(expected_prefix)]}" + (" (file removed)" if remove_on_mismatch else "")
        )
    return actual


def hash_in_name(name: str) -> str | None:
    """The sha256 prefix a published file name ``<name>-<8 hex>.pth`` ends with, else None."""
    match = _HASH_IN_NAME.fullmatch(name)
    return match.group(1) if match else None


def verify_file(path: str | Path, *, sha256: str | None = None) -> str:
    """Check file ``path`` against ``sha256`` (8 to 64 hex digits, a prefix of its hash),
    else against the hash in its name (``hash_in_name``); return its full sha256. A mismatch
    is a ``CheckpointError``."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"file not found: {path}")
    expected = sha256 or hash_in_name(path.name)
    if expected is None:
        raise InputError(f"{path}: the name does not end with -<sha256[:8]>.pth; give the expected sha256")
    if not re.fullmatch(r"[0-9a-fA-F]{8,64}", expected):
        raise InputError(f"expected sha256 {expected!r} is not 8 to 64 hex digits")
    return _check_hash(path, expected, remove_on_mismatch=False)


def cache_dir() -> Path:
    """Where downloaded weights (zoo models, ImageNet backbones) are kept: ``$DETZOO_CACHE``,
    else ``~/.cache/detzoo``."""
    env = os.environ.get("DETZOO_CACHE")
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "detzoo").absolute()


def _download(url: str, path: Path, hint: str = "") -> None:
    """Download ``url`` to ``path`` unless a file is there; a failure is one line naming
    the URL and the path to put the file at by hand (then ``hint``)."""
    if path.is_file():
        return
    try:
        with urlopen(url) as response, atomic_write(path) as f:
            shutil.copyfileobj(response, f)
    except OSError as e:  # URLError and HTTPError included
        reason = e if isinstance(e, HTTPError) else getattr(e, "reason", e)
        raise CheckpointError(f"could not download {url} ({reason}); download it and put it at {path}{hint}") from e


def _check_md5(path: Path, md5_path: Path, md5_url: str) -> None:
    """``path``'s md5 must be the hex digest that ``md5_path`` (fetched from ``md5_url``) starts
    with (the whole file in Detectron's ``.md5sum``, the first word in ``md5sum``'s output).
    A mismatch removes both files, so that the next try fetches both again."""
    words = md5_path.read_bytes().split()
    expected = words[0].decode("latin1").lower() if words else ""
    if not re.fullmatch(r"[0-9a-f]{32}", expected):
        md5_path.unlink()
        raise CheckpointError(f"{md5_path} (from {md5_url}) does not start with an md5, 32 hex digits (file removed)")
    actual = file_hash(path, "md5")
    if actual != expected:
        path.unlink()
        md5_path.unlink()
        raise CheckpointError(f"md5 mismatch for {path}: expected {expected} (from {md5_url}), got {actual} "
                              "(file removed, with its md5 file)")


def fetch_checkpoint(
    url_or_path: str,
    *,
    cache_dir: str | Path,
    sha256: str | None = None,
    md5_url: str | None = None,
    cache_prefix: str = "",
) -> Path:
    """Return a local checkpoint path, downloading URLs (http, https, file) into ``cache_dir``.

    A local path is returned as is, after checking ``sha256`` if given. A URL's file is
    downloaded once, as ``cache_prefix`` + the URL's file name, and reused; its sha256
    must start with ``sha256`` if given, else with the 8 hex chars of an mmdetection-style
    name ``<name>-<8 hex>.pth`` (as torch.hub). With ``md5_url`` (Detectron's
    ``<URL>.md5sum``), that file is downloaded once beside it (its name + ``.md5sum``) and
    the file's md5 must be the one it holds. A cached file failing its check is removed. A
    failed download names the URL and where to put the file instead (and where its md5 goes).
    """
    if "://" not in url_or_path:
        path = Path(url_or_path)
        if not path.is_file():
            raise MissingFileError(f"checkpoint file not found: {path}")
        if sha256:
            _check_hash(path, sha256, remove_on_mismatch=False)
        return path
    url = urlparse(url_or_path)
    if url.scheme not in _URL_SCHEMES:
        raise InputError(
            f"unsupported URL scheme {url.scheme!r} in {url_or_path}; valid: {', '.join(_URL_SCHEMES)}"
        )
    name = unquote(Path(url.path).name)
    if not name:
        raise InputError(f"checkpoint URL {url_or_path} does not end with a file name")
    path = Path(cache_dir) / f"{cache_prefix}{name}"
    md5_path = path.with_name(f"{path.name}.md5sum")
    _download(url_or_path, path, f", and {md5_url} at {md5_path}" if md5_url else "")
    if md5_url:
        _download(md5_url, md5_path)
        _check_md5(path, md5_path, md5_url)
    expected = sha256 or hash_in_name(name)
    if expected:
        _check_hash(path, expected, remove_on_mismatch=True)
    return path


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
