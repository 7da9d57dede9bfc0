"""Process-wide memory allocation for the commands: ``retain_freed_memory`` makes glibc's
malloc keep the large blocks a process frees for its next allocations.

By default glibc serves every allocation above its mmap threshold (at most 32 MiB) with a
fresh ``mmap`` and returns it to the system on free. A detector's feature maps at 800x1333
are larger (ResNet-50's first stage writes 1x256x200x336 floats, 66 MiB), so each layer's
output is new memory that the kernel zeroes page by page on first touch. On a 2-core AMD
EPYC that made ResNet-50's convolutions at 800x1344 take 1.88 s instead of 1.34-1.52 s, and
Faster R-CNN R-50-FPN's 800x1333 inference and training about 30% slower (README, "Speed
against torchvision and mmdetection", has the commands). PyTorch's CPU allocator caches
nothing, so this is the place to fix it without preloading another malloc (jemalloc,
tcmalloc), as PyTorch's performance guide suggests. The price: freed blocks are reused for
blocks of other sizes, and training's peak RSS at 800x1333 rose by 30% there.

The commands call it on start (``detzoo`` and ``make demo``, and the benchmarks), not the
library on import: a process that embeds detzoo keeps its own allocator settings.
"""

from __future__ import annotations

import ctypes
import os
import sys

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# the largest value mallopt takes (an int): blocks above 2 GiB still come from mmap
_THRESHOLD = 2**31 - 1
# glibc's own environment settings of these two: a user who set one keeps it
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def retain_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds to 2 GiB, so that freed blocks below that stay
    in the process for reuse: its resident memory stays at its high-water mark, which its
    peak is anyway. True when set; False off Linux, without glibc, when glibc refuses, or
    when the environment sets glibc's malloc already (``USER_SETTINGS``: nothing changed)."""
    if not sys.platform.startswith("linux") or any(name in os.environ for name in USER_SETTINGS):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl names its libc otherwise)
        return False
    return bool(mallopt(_M_TRIM_THRESHOLD, _THRESHOLD)) and bool(mallopt(_M_MMAP_THRESHOLD, _THRESHOLD))
