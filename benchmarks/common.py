"""Helpers of the benchmark scripts: matching two toolboxes' detections, a process's peak
RSS, and the ``--malloc`` choice."""

from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path

import numpy as np

from detzoo.allocator import retain_freed_memory

GIB = 2**30


def add_malloc_argument(parser: argparse.ArgumentParser) -> None:
    """``--malloc retain|default``, applied by ``set_malloc``."""
    parser.add_argument("--malloc", choices=("retain", "default"), default="retain",
                        help="retain: keep freed memory for reuse, as detzoo's commands do (detzoo.allocator); "
                        "default: glibc's defaults (default: %(default)s)")


def set_malloc(choice: str) -> bool:
    """``--malloc``'s ``choice`` for this process: whether freed memory is now kept for reuse."""
    return choice == "retain" and retain_freed_memory()


def nearest_twins(ours: dict, theirs: dict) -> tuple[np.ndarray, np.ndarray]:
    """For each detection of ``theirs``, the largest box coordinate difference (px) to the
    detection of ``ours`` with the same label and the nearest box, and their score difference
    (inf where ``ours`` has no detection of that label)."""
    box, score = [], []
    for b, s, label in zip(theirs["boxes"], theirs["scores"], theirs["labels"]):
        same = np.flatnonzero(ours["labels"] == label)
        if not len(same):
            box.append(np.inf), score.append(np.inf)
            continue
        diffs = np.abs(ours["boxes"][same] - b).max(1)
        j = same[diffs.argmin()]
        box.append(diffs.min()), score.append(abs(ours["scores"][j] - s))
    return np.asarray(box), np.asarray(score)


def peak_rss_gb() -> float:
    """This process's peak resident set size in GiB: ``VmHWM`` of /proc/self/status on Linux,
    the high-water mark of the process's own memory since its program started. Not
    ``getrusage``'s ``ru_maxrss``, which in a process started by a large parent (fork + exec,
    as ``multiprocessing``'s spawn and ``subprocess`` do) starts at the parent's RSS; it is
    used only where /proc is missing (macOS: bytes, Linux: KiB)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / GIB
    unit = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit / GIB
