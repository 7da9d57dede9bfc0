"""Files named and checked by their hash, and downloads into the weights cache.

``file_hash`` / ``sha256_file`` digest a file; ``verify_file`` checks one against a sha256
prefix or the ``<name>-<sha256[:8]>.pth`` of mmdetection's published names
(``hash_in_name``); ``fetch_checkpoint`` downloads a URL (http, https, file) once into a
cache folder (``cache_dir()``, where the weights of the zoo and of ImageNet backbones go)
and checks it the way ``torch.hub`` does (the sha256 prefix in its name, or one given), or
by Detectron's ``.md5sum`` files. A file failing its check is a ``CheckpointError``, and a
downloaded one is removed.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path
from urllib.error import HTTPError
from urllib.parse import unquote, urlparse
from urllib.request import urlopen

from detzoo.errors import CheckpointError, InputError, MissingFileError
from detzoo.files import atomic_write

_HASH_IN_NAME = re.compile(r".+-([0-9a-f]{8})\.pth")
_URL_SCHEMES = ("http", "https", "file")


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
