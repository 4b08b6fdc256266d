"""The paper-style figures: ``make_figures(paths, out, formats)`` draws figures from any alignloc JSON
results (``alignloc.experiments.paper.zoo_results`` runs the zoo experiments that make them).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import plotly.graph_objects as go

from alignloc.report.figfiles import (
    PLAIN,
    STATIC,
    NoChromiumError,
    no_chromium_error,
    plain_names,
    write_plain,
)
from alignloc.report.figures import ResultError, context_prior_compare, export, figures_for, kind_of
from alignloc.store.outputs import check_out_dir
from alignloc.textio import read_json

Log = Callable[[str], None]


def read_figures(results: list[str | Path]) -> list[tuple[Path, str, go.Figure]]:
    """``(result file, file stem, figure)`` for every result file (a ``report.json`` or a directory holding one),
    stems unique across inputs (``-2``, ``-3`` appended to repeats), plus ``context_prior_compare`` when several
    context-prior results are given; ResultError naming the file on any bad input."""
    figs, seen, cp = [], Counter(), []
    for r in results:
        p = Path(r)
        p = p / "report.json" if p.is_dir() else p
        if not p.is_file():
            raise ResultError(f"{r}: no such result (give a report.json or its directory)")
        data = read_json(p, ResultError, "result file", "give a report.json written by alignloc")
        try:
            new = figures_for(data)
        except ResultError as e:
            raise ResultError(f"{p}: {e}") from None
        for stem, fig in new:
            seen[stem] += 1
            figs.append((p, stem if seen[stem] == 1 else f"{stem}-{seen[stem]}", fig))
        if kind_of(data) == "context-prior":
            cp.append((p, data))
    if len(cp) > 1:  # several context-prior results (e.g. the zoo and a real model): one figure side by side
        figs.append((cp[-1][0], "context_prior_compare", context_prior_compare([d for _, d in cp])))
    return figs


def make_figures(results: list[str | Path], out: str | Path, formats: list[str], log: Log = lambda m: None,
                 overwrite: bool = False) -> list[Path]:
    """Read every result, check ``out`` (see ``alignloc.store.outputs``), then write and verify the figures; their paths.

    ``formats``: any of ``FORMATS``. The browser-free ones (html, json) are written first; when the static
    ones cannot be drawn for want of Chromium, the browser-free ones are written too (where no file of the
    user's has their name) and ``NoChromiumError`` says so (``alignloc.report.figfiles``).
    """
    figs = read_figures(results)
    stems = [stem for _, stem, _ in figs]
    static, plain = [f for f in formats if f in STATIC], [f for f in formats if f in PLAIN]
    check_out_dir(out, [f"{stem}.{fmt}" for stem in stems for fmt in static] + plain_names(stems, plain),
                  overwrite=overwrite)
    for src in dict.fromkeys(src for src, _, _ in figs):
        log(f"{src}: {', '.join(stem for s, stem, _ in figs if s == src)}")
    pairs = [(stem, fig) for _, stem, fig in figs]
    written = write_plain(pairs, out, plain)
    try:
        return written + (export(pairs, out, static) if static else [])
    except NoChromiumError as e:
        written += write_plain(pairs, out, [f for f in PLAIN if f not in plain], skip_taken=True)
        raise no_chromium_error(e.why, static, out, written) from None
