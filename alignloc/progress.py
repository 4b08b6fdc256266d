"""Progress of long steps, one way for every command.

On a terminal, a stage that lasts longer than ``DELAY`` seconds shows a tqdm bar with its rate and
ETA; elsewhere (logs, CI) each such stage prints one line when it ends, with what it did and its
elapsed time; ``quiet`` prints nothing. The library calls ``stage`` / ``iterate``; the command line
sets the mode (``--quiet``). Lines go to stderr, so a command's stdout stays its result.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from tqdm.auto import tqdm

MODES = ("auto", "bar", "lines", "quiet")
DELAY = 2.0  # seconds: shorter stages show nothing
QUIET_HELP = ("No progress output (by default: a bar with its ETA for each step longer than 2 s on a terminal, one line "
              "per such step with its time otherwise).")
T = TypeVar("T")
_mode = "auto"


def configure(mode: str = "auto") -> None:
    """Set how stages report: ``auto`` (a bar on a terminal, else lines), ``bar``, ``lines`` or ``quiet``."""
    global _mode
    if mode not in MODES:
        raise ValueError(f"progress mode must be one of {MODES}, got {mode!r}")
    _mode = mode


def mode() -> str:
    """The mode in effect (``auto`` resolved against stderr)."""
    if _mode == "auto":
        return "bar" if sys.stderr.isatty() else "lines"
    return _mode


@contextmanager
def stage(desc: str, total: int | None = None, unit: str = "step") -> Iterator[Callable[[int], None]]:
    """A stage of ``total`` units of work; yields ``advance(n=1)``. Reports per ``mode()`` (see the module docstring)."""
    m, t0, done = mode(), time.perf_counter(), [0]
    bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, delay=DELAY, mininterval=0.5,
               dynamic_ncols=True, disable=False) if m == "bar" else None

    def advance(n: int = 1) -> None:
        done[0] += n
        if bar is not None:
            bar.update(n)

    finished = False
    try:
        yield advance
        finished = True
    finally:  # an interrupted stage prints no line: the command's own last line says what was kept
        if bar is not None:
            bar.close()
        elapsed = time.perf_counter() - t0
        if finished and m == "lines" and elapsed >= DELAY:
            of = f"/{total}" if total is not None else ""
            print(f"[alignloc] {desc}: {done[0]}{of} {plural(unit)} in {elapsed:.1f} s", file=sys.stderr, flush=True)


def note(line: str) -> None:
    """A line a long run prints before it starts (e.g. its plan), to stderr; nothing when ``quiet``."""
    if mode() != "quiet":
        print(f"[alignloc] {line}", file=sys.stderr, flush=True)


def plural(unit: str) -> str:
    """``batch`` -> ``batches``, ``step`` -> ``steps``."""
    return unit + ("es" if unit.endswith(("s", "ch", "sh", "x")) else "s")


def iterate(items: Iterable[T], desc: str, total: int | None = None, unit: str = "step") -> Iterator[T]:
    """``items`` one by one inside a ``stage`` (``total`` defaults to ``len(items)`` where it has one)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with stage(desc, total, unit) as advance:
        for x in items:
            yield x
            advance()
