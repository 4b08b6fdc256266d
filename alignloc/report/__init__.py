"""Reports read a result (a JSON-ready dict: layer-diff, context-prior) and never load models.

``write_report(report, out)`` writes ``report.json``, ``summary.md`` and a self-contained
``index.html`` (plotly.js inlined: it opens offline) under ``out``, each atomically and never
over a file alignloc did not write (see ``alignloc.store.outputs``); the renderers default to
layer-diff's.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from alignloc.store.outputs import write_outputs

REPORT_FILES = ("report.json", "summary.md", "index.html")


def json_safe(obj):
    """``obj`` with NaN/inf floats replaced by None (strict JSON has no NaN); a typed result
    (``report.results``) as its ``to_json()`` dict."""
    if hasattr(obj, "to_json"):
        obj = obj.to_json()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def write_report(report, out: str | Path, render_markdown=None, render_html=None) -> dict[str, Path]:
    """Write the three report files of ``report`` (a JSON-ready dict or a typed result, ``report.results``)
    under ``out``; returns their paths by format."""
    if render_html is None:
        from alignloc.report.html import render_html
    if render_markdown is None:
        from alignloc.report.markdown import render_markdown

    safe = json_safe(report)
    data = (json.dumps(safe, indent=1, allow_nan=False), render_markdown(safe), render_html(safe))
    paths = write_outputs(out, {name: text.encode() for name, text in zip(REPORT_FILES, data, strict=True)})
    return dict(zip(("json", "markdown", "html"), paths.values(), strict=True))


def load_report(path: str | Path) -> dict:
    """Read a ``report.json`` (or the directory holding one)."""
    from alignloc.report.figures import ResultError
    from alignloc.textio import read_json

    p = Path(path)
    p = p / "report.json" if p.is_dir() else p
    return read_json(p, ResultError, "result file")
