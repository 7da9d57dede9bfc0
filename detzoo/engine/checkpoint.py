"""Checkpoint files: atomic saving, weights-only loading, RNG state, fetching and publishing.

Loading never unpickles arbitrary objects (``torch.load(weights_only=True)`` only), so a
checkpoint holds tensors and plain Python data. Published files follow mmdetection's
naming, ``<name>-<sha256[:8]>.pth``, and ``fetch_checkpoint`` checks that prefix the way
``torch.hub`` does.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator, Sequence
from urllib.parse import unquote, urlparse
from urllib.request import urlopen

import numpy as np
import torch

_HASH_IN_NAME = re.compile(r".+-([0-9a-f]{8})\.pth")
_URL_SCHEMES = ("http", "https", "file")


class CheckpointError(RuntimeError):
    """A checkpoint file is unreadable, refused, or fails its hash check."""


@contextmanager
def atomic_write(path: str | Path, *, text: bool = False) -> Iterator[IO]:
    """Open a temp file beside ``path`` (binary unless ``text``); on success flush, fsync and
    rename it onto ``path``.

    On error the temp file is removed and ``path`` is left untouched. Parent dirs are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "x" if text else "xb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` with ``torch.save`` atomically (temp file + fsync + rename)."""
    with atomic_write(path) as f:
        torch.save(state, f)


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with ``torch.load(weights_only=True)``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for a corrupt file; all mean the same here
        # the weights-only unpickler wraps the useful message, "Unsupported global: ...", in a long text
        detail = (str(e.__context__ or e) or type(e).__name__).split(". Please")[0].splitlines()[0]
        if "Unsupported global" in detail:
            raise CheckpointError(
                f"checkpoint {path} was refused: it holds pickled Python objects ({detail}); "
                "it may contain code, and detzoo only loads weights-only checkpoints"
            ) from e
        raise CheckpointError(
            f"checkpoint {path} could not be read (truncated or corrupt?): {type(e).__name__}: {detail}"
        ) from e
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, expected a dict")
    return state


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


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_hash(path: Path, expected_prefix: str, *, remove_on_mismatch: bool) -> None:
    actual = sha256_file(path)
    if not actual.startswith(expected_prefix.lower()):
        if remove_on_mismatch:
            path.unlink(missing_ok=True)
        raise CheckpointError(
            f"sha256 mismatch for {path}: expected prefix {expected_prefix}, "
            f"got {actual[: len(expected_prefix)]}" + (" (file removed)" if remove_on_mismatch else "")
        )


def fetch_checkpoint(url_or_path: str, *, cache_dir: str | Path, sha256: str | None = None) -> Path:
    """Return a local checkpoint path, downloading URLs (http, https, file) into ``cache_dir``.

    A local path is returned as is, after checking ``sha256`` if given. A URL's file is
    downloaded once and reused; its sha256 must start with ``sha256`` if given, else with
    the 8 hex chars of an mmdetection-style name ``<name>-<8 hex>.pth`` (as torch.hub).
    A cached file failing its check is removed.
    """
    if "://" not in url_or_path:
        path = Path(url_or_path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint file not found: {path}")
        if sha256:
            _check_hash(path, sha256, remove_on_mismatch=False)
        return path
    url = urlparse(url_or_path)
    if url.scheme not in _URL_SCHEMES:
        raise ValueError(
            f"unsupported URL scheme {url.scheme!r} in {url_or_path}; valid: {', '.join(_URL_SCHEMES)}"
        )
    name = unquote(Path(url.path).name)
    if not name:
        raise ValueError(f"checkpoint URL {url_or_path} does not end with a file name")
    path = Path(cache_dir) / name
    if not path.is_file():
        try:
            with urlopen(url_or_path) as response, atomic_write(path) as f:
                shutil.copyfileobj(response, f)
        except OSError as e:  # URLError and HTTPError included
            raise CheckpointError(f"could not download {url_or_path} to {path}: {e}") from e
    match = _HASH_IN_NAME.fullmatch(name)
    expected = sha256 or (match.group(1) if match else None)
    if expected:
        _check_hash(path, expected, remove_on_mismatch=True)
    return path


def publish_checkpoint(
    src: str | Path, out_dir: str | Path, *, name: str, keep_keys: Sequence[str] = ("model", "meta")
) -> Path:
    """Keep only ``keep_keys`` of checkpoint ``src`` (drop optimizer/scheduler state) and
    write it as ``out_dir/<name>-<sha256[:8]>.pth``, the hash being that of the written file."""
    if not name or Path(name).name != name or name.endswith(".pth"):
        raise ValueError(f"publish name must be a bare file stem without '.pth', got {name!r}")
    state = load_checkpoint(src)
    missing = [k for k in keep_keys if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {src} lacks keys {missing}; it has {sorted(state)}")
    staging = Path(out_dir) / f".{name}.unpublished.pth"
    save_checkpoint(staging, {k: state[k] for k in keep_keys})
    final = staging.with_name(f"{name}-{sha256_file(staging)[:8]}.pth")
    os.replace(staging, final)
    return final
