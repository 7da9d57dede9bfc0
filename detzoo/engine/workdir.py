"""A training's work dir: one run at a time in it, another run's files never mixed in, and
Ctrl-C reported as the checkpoint it left.

``claim_work_dir`` holds the work dir while ``detzoo.engine.trainer.train`` runs (on the
main process; under torchrun, rank 0):

- it locks ``<work_dir>/.lock`` (``fcntl.flock``): a second training into the same work dir
  is refused, naming the run that holds it (pid, host, start). The kernel releases the lock
  when its process dies, however it dies, so a lock left by a killed run is stale at once:
  the next run takes it over, with a warning naming the run that left it.
- a fresh training (without ``resume``) into a work dir that holds an earlier run's
  ``checkpoint.pth`` or ``model_final.pth`` is refused unless ``overwrite``; then the trainer
  removes that run's files (``remove_earlier_run``) once its config, data and model are
  built, before it writes anything, so that checkpoints, ``config.py`` and ``log.jsonl`` are
  always one run's and a mistake in the config costs no earlier run.
- ``KeyboardInterrupt`` (Ctrl-C) becomes ``TrainingInterrupted``, whose message names the
  checkpoint left and its iteration.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Iterator

from detzoo.engine.checkpoint import load_checkpoint
from detzoo.errors import InputError, OutputError

logger = logging.getLogger("detzoo.train")

CHECKPOINT = "checkpoint.pth"
FINAL = "model_final.pth"
LOG = "log.jsonl"
TENSORBOARD = "tensorboard"
RUN_FILES = (CHECKPOINT, FINAL, LOG, TENSORBOARD)  # what ``overwrite`` removes (config.py is rewritten)
LOCK = ".lock"


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training. ``resumable``: a checkpoint is left to resume from."""

    def __init__(self, message: str, *, resumable: bool) -> None:
        super().__init__(message)
        self.resumable = resumable


@contextlib.contextmanager
def claim_work_dir(work_dir: Path, *, resume: bool, overwrite: bool) -> Iterator[None]:
    """Hold ``work_dir`` for one training; see the module docstring."""
    if resume and overwrite:
        raise InputError("--resume continues the run in the work dir and --overwrite replaces it: give one of them")
    main = int(os.environ.get("RANK", "0")) == 0  # torch.distributed is not initialised yet
    lock = _lock(work_dir) if main else None
    try:
        if main and not resume and not overwrite:
            _refuse_earlier_run(work_dir)
        yield
    except KeyboardInterrupt:
        checkpoint = work_dir / CHECKPOINT
        if not checkpoint.is_file():
            raise TrainingInterrupted("interrupted before this run wrote a checkpoint: start again",
                                      resumable=False) from None
        iteration = load_checkpoint(checkpoint)["iteration"]
        raise TrainingInterrupted(f"interrupted; the last checkpoint, {checkpoint} (iteration {iteration}), is left "
                                  "as it was: resume from it", resumable=True) from None
    finally:
        if lock is not None:
            (work_dir / LOCK).unlink(missing_ok=True)  # while holding it: a run waiting on it then retries
            os.close(lock)


def _lock(work_dir: Path) -> int:
    """The descriptor of ``work_dir``'s lock file, locked; an ``OutputError`` naming the
    holder if another process holds it."""
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / LOCK
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 1000).decode(errors="replace").strip() or "a process starting up"
            os.close(fd)
            raise OutputError(f"work dir {work_dir} is in use by another training ({holder}): wait for it to end "
                              "or give another --work-dir") from None
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # its holder removed it as we locked it: lock the file that is there now
    left = os.read(fd, 1000).decode(errors="replace").strip()
    if left:
        logger.warning("work dir %s: took over the lock of a training that ended without releasing it (%s)",
                       work_dir, left)
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
    return fd


def _refuse_earlier_run(work_dir: Path) -> None:
    """Before a fresh training: an ``OutputError`` if ``work_dir`` holds an earlier run's checkpoint."""
    earlier = [name for name in (CHECKPOINT, FINAL) if (work_dir / name).exists()]
    if earlier:
        raise OutputError(f"work dir {work_dir} holds {' and '.join(earlier)} of an earlier run: continue it with "
                          "--resume, or start afresh with --overwrite (which removes its checkpoints and log)")


def remove_earlier_run(work_dir: Path) -> None:
    """``--overwrite``: remove the files of the run that was in ``work_dir`` (``RUN_FILES``)."""
    found = [name for name in RUN_FILES if (work_dir / name).exists()]
    for name in found:
        path = work_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    if found:
        logger.warning("--overwrite: removed the earlier run's %s from %s", ", ".join(found), work_dir)
