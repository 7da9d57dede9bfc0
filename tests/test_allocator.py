"""``retain_freed_memory``: large blocks come from malloc's heap, not fresh mmaps, once it
ran; the user's own glibc settings and other platforms are left alone."""

from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import sys

import pytest

import detzoo.allocator
import detzoo.cli
import detzoo.demo
from detzoo.allocator import retain_freed_memory

# In a fresh interpreter: a 64 MiB array alive, then glibc's count of bytes in mmapped blocks
# (mallinfo2's hblkhd) against 64 MiB; argv[1] "1" calls retain_freed_memory (argv[2]'s: the
# module alone, without importing detzoo and torch) first.
_PROBE = """
import ctypes, runpy, sys
import numpy as np
retain_freed_memory = runpy.run_path(sys.argv[2])["retain_freed_memory"]

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
retained = retain_freed_memory() if sys.argv[1] == "1" else None
block = np.ones(64 << 20, dtype=np.uint8)
print(retained, libc.mallinfo2().hblkhd >= 64 << 20)
"""

glibc_only = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc" or not hasattr(ctypes.CDLL(None), "mallinfo2"), reason="glibc >= 2.33 only"
)


def _probe(retain: bool, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k not in detzoo.allocator.USER_SETTINGS}
    command = [sys.executable, "-c", _PROBE, "1" if retain else "0", detzoo.allocator.__file__]
    done = subprocess.run(command, env={**environ, **env}, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@glibc_only
def test_large_blocks_come_from_the_heap_once_retained():
    assert _probe(False) == "None True"  # glibc's default: a fresh mmap, unmapped on free
    assert _probe(True) == "True False"


@glibc_only
def test_the_users_own_malloc_settings_are_kept():
    assert _probe(True, MALLOC_MMAP_THRESHOLD_="131072") == "False True"
    assert _probe(True, GLIBC_TUNABLES="glibc.malloc.mmap_threshold=131072") == "False True"


def test_nothing_changes_off_linux_or_without_glibc(monkeypatch):
    for name in detzoo.allocator.USER_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "platform", "darwin")
    assert retain_freed_memory() is False
    monkeypatch.setattr(sys, "platform", "linux")

    def no_glibc(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", no_glibc)
    assert retain_freed_memory() is False


def test_the_commands_retain_freed_memory(monkeypatch):
    """``detzoo`` and ``make demo`` do; ``detzoo.cli.main`` called from Python does not."""
    calls = []
    for module in (detzoo.cli, detzoo.demo):
        monkeypatch.setattr(module, "retain_freed_memory", lambda name=module.__name__: calls.append(name) or True)
    monkeypatch.setattr(sys, "argv", ["detzoo", "--version"])
    with pytest.raises(SystemExit):
        detzoo.cli.entry_point()
    with pytest.raises(SystemExit):
        detzoo.cli.main(["--version"])
    with pytest.raises(SystemExit):
        detzoo.demo.main(["--help"])
    assert calls == ["detzoo.cli", "detzoo.demo"]
