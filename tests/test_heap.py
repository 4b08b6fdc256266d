"""glibc kept from unmapping freed large blocks (``models.heap``): the command line's allocator setting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from alignloc.models import heap

PROBE = r"""
import ctypes, sys
import torch
from alignloc.models.heap import keep_freed_memory

class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                                               "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
x = torch.empty(64 << 18)  # a 64 MiB tensor, above glibc's largest mmap threshold (32 MiB)
print(applied, libc.mallinfo2().hblkhd >> 20)
"""


@pytest.mark.skipif(not heap._libc() or not hasattr(heap._libc(), "mallinfo2"), reason="glibc >= 2.33 only")
def test_a_large_tensor_comes_from_the_heap_once_freed_memory_is_kept():
    """As glibc has it, a 64 MiB tensor is its own mmap (page-faulted in on every allocation); after
    ``keep_freed_memory`` it comes from the heap, which keeps it for the next one; ``ALIGNLOC_HEAP=system`` opts out."""
    def mmapped(mode: str, **env: str) -> tuple[str, int]:
        out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                             env={**os.environ, **env}).stdout.split()
        return out[0], int(out[1])

    assert mmapped("as-is") == ("None", pytest.approx(64, abs=8))
    applied, mib = mmapped("keep")
    assert applied == "True" and mib < 16
    assert mmapped("keep", ALIGNLOC_HEAP="system") == ("False", pytest.approx(64, abs=8))  # the opt-out


def test_the_alignloc_command_keeps_freed_memory_before_it_runs(monkeypatch):
    """The console entry (``alignloc``, ``python -m alignloc.cli``) sets the allocator first, then runs ``main``."""
    import alignloc.cli as cli

    calls = []
    monkeypatch.setattr(heap, "keep_freed_memory", lambda: calls.append("heap") or True)
    monkeypatch.setattr(cli, "main", lambda argv=None: calls.append("main") or 0)
    assert cli.entry() == 0 and calls == ["heap", "main"]
    assert 'alignloc = "alignloc.cli:entry"' in (Path(__file__).parents[1] / "pyproject.toml").read_text()
