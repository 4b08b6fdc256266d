"""Large CPU tensors without a page fault per allocation: glibc told to keep freed memory for reuse.

glibc serves an allocation above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and unmaps it
on free, so every such tensor is page-faulted in again. With a 262k-token vocabulary the logits of a few
dozen scored positions are tens of MiB, and the causal pass makes thousands of them (the delta mask's KL,
every graft's target log-probs): on the Gemma-3-270M configuration an 84 MiB ``log_softmax`` took 54 ms
from fresh memory and 14 ms from reused memory. ``keep_freed_memory`` sets glibc's ``M_MMAP_MAX`` to 0
(large blocks come from the heap too) and ``M_TRIM_THRESHOLD`` high (freed memory stays for the next
block) for the rest of the process: the command line does so at its start, before any model loads, since
set later it gained less (a localization on the Gemma configuration: 115 s as is, 96 s set at the start,
107 s set just before it). The numbers computed are the same; the process keeps its peak memory instead
of returning it (with ``--one-at-a-time`` a released model's memory stays with the process for the next
load; that mode's peak was measured without this setting, ``benchmarks/memory.py``). Where
the C library is not glibc (macOS, musl, Windows), or with ``ALIGNLOC_HEAP=system`` in the environment,
nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from functools import cache

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters
KEEP = 2**31 - 1  # the largest trim threshold mallopt takes: freed memory below it stays for reuse


@cache
def _libc() -> ctypes.CDLL | None:
    """glibc, or None where the C library is another (no ``mallopt``)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "mallopt") else None


@cache
def keep_freed_memory() -> bool:
    """For the rest of this process, large CPU allocations come from glibc's heap and freed ones stay there for
    reuse (see the module docstring); True where applied, False where not (not glibc, or ``ALIGNLOC_HEAP=system``).
    Call it once, first thing."""
    libc = None if os.environ.get("ALIGNLOC_HEAP") == "system" else _libc()
    return libc is not None and bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, KEEP))
