"""Writing files safely, the bottom layer every other writes through: ``atomic_write``
(temp file, fsync, rename; a full disk is one ``DiskFullError`` naming the file) and
``refuse_overwriting`` (no command replaces one of its inputs or writes one file twice)."""

from __future__ import annotations

import collections
import errno
import os
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from detzoo.errors import DiskFullError, OutputError


@contextmanager
def atomic_write(path: str | Path, *, text: bool = False) -> Iterator[IO]:
    """Open a temp file beside ``path`` (binary unless ``text``); on success flush, fsync and
    rename it onto ``path``.

    On error the temp file is removed and ``path`` is left untouched. Parent dirs are created.
    A full device (or disk quota) is a ``DiskFullError`` naming ``path``, whatever the
    writer made of the operating system's error (torch.save turns it into a RuntimeError).
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
    except Exception as e:
        if not _disk_full(e):
            raise
        kept = "is left as it was" if path.exists() else "was not written"
        raise DiskFullError(f"no space left on the device to write {path}: {path} {kept}; free some space "
                            "and run the command again") from e
    finally:
        tmp.unlink(missing_ok=True)


def _disk_full(error: BaseException | None) -> bool:
    """Whether ``error``, or an error it was raised from or while handling, is the operating
    system's "no space left" or "disk quota exceeded"."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        error = error.__cause__ or error.__context__
    return False


def refuse_overwriting(outputs: Iterable[str | Path], inputs: Iterable[str | Path | None]) -> None:
    """An ``OutputError`` before anything is written when one of ``outputs`` is one of
    ``inputs`` (the same file, however it is named; None: no such input) or another of
    ``outputs``: a command never replaces a file it reads, nor writes one file twice."""
    by_name: dict[str, list[Path]] = collections.defaultdict(list)
    for path in (Path(p) for p in inputs if p is not None):
        by_name[path.name.lower()].append(path)
    written: dict[str, Path] = {}
    for path in map(Path, outputs):
        key = os.path.normcase(os.path.abspath(path))
        if key in written:
            raise OutputError(f"{written[key]} and {path} are one file: it would be written twice")
        written[key] = path
        for source in by_name[path.name.lower()]:  # only a file of the same name can be the same file
            if path.exists() and source.exists() and os.path.samefile(path, source):
                raise OutputError(f"writing {path} would replace the input {source}; choose another output")
