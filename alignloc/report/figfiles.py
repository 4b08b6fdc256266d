"""Figure files that need no browser, and the one error when the static ones cannot be drawn.

kaleido draws PDF, SVG and PNG in a headless Chromium; on a machine without one it raises. What
needs no browser is written anyway: ``figures.html`` (every figure, interactive, plotly.js inlined
once so it opens offline) and one plotly JSON file per figure (``plotly.io.read_json`` reads it
back, and ``write_image`` exports it once Chromium is installed). ``NoChromiumError`` then says
what is missing, what was written and how to install it, as one line.
"""

from __future__ import annotations

import html
from pathlib import Path

import plotly.graph_objects as go

from alignloc.errors import OutputError
from alignloc.store.outputs import foreign, write_outputs

STATIC = ("pdf", "svg", "png")  # drawn by kaleido in Chromium
PLAIN = ("html", "json")  # written without a browser
FORMATS = STATIC + PLAIN
PAGE = "figures.html"
INSTALL = ("install Chromium: apt-get install chromium, or plotly_get_chrome (kaleido.get_chrome_sync() from Python), "
           "then rerun the same command; --format html,json needs no browser")


class NoChromiumError(OutputError):
    """kaleido found no Chromium (or could not start it), so static figures cannot be drawn; ``why`` says which."""

    def __init__(self, message: str, why: str = "cannot find"):
        super().__init__(message)
        self.why = why


def plain_names(stems: list[str], formats: list[str]) -> list[str]:
    """The files ``write_plain`` writes for figures ``stems`` in the browser-free ``formats``."""
    return ([PAGE] if "html" in formats else []) + ([f"{s}.json" for s in stems] if "json" in formats else [])


def page(figs: list[tuple[str, go.Figure]]) -> str:
    """One self-contained HTML page holding every figure under its file stem."""
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    parts = [f"<h2>{html.escape(stem)}</h2>" + pio.to_html(fig, include_plotlyjs=False, full_html=False)
             for stem, fig in figs]
    return ("<!DOCTYPE html><html><head><meta charset=utf-8><title>alignloc figures</title>"
            f"<script type=\"text/javascript\">{get_plotlyjs()}</script></head><body>" + "\n".join(parts) + "</body></html>")


def write_plain(figs: list[tuple[str, go.Figure]], out: str | Path, formats: list[str], skip_taken: bool = False) -> list[Path]:
    """Write the browser-free ``formats`` (html: one page; json: a file per figure) under ``out``; the paths.

    ``skip_taken``: leave out names already taken by files alignloc did not write (instead of refusing).
    """
    data = {PAGE: page(figs)} if "html" in formats else {}
    data.update({f"{stem}.json": fig.to_json() for stem, fig in figs} if "json" in formats else {})
    if skip_taken:
        taken = set(foreign(out))
        data = {k: v for k, v in data.items() if k not in taken}
    return list(write_outputs(out, {k: v.encode() for k, v in data.items()}).values()) if data else []


def no_chromium(e: BaseException) -> str | None:
    """``cannot find`` / ``could not start`` when ``e`` (or what it was raised from) is kaleido lacking Chromium."""
    from kaleido.errors import BrowserFailedError, ChromeNotFoundError

    while e is not None:
        if isinstance(e, ChromeNotFoundError) or "requires Google Chrome" in str(e):  # plotly re-raises the latter
            return "cannot find"
        if isinstance(e, BrowserFailedError):
            return "could not start"
        e = e.__cause__ or e.__context__
    return None


def no_chromium_error(why: str, static: list[str], out: str | Path, written: list[Path]) -> NoChromiumError:
    """The one error: which figures need Chromium, what was written instead, and how to install it."""
    page_ = [p.name for p in written if p.name == PAGE]
    n_json = sum(p.suffix == ".json" for p in written)
    wrote = page_ + ([f"{n_json} plotly JSON file{'s' if n_json != 1 else ''}"] if n_json else [])
    done = f"wrote {' and '.join(wrote)} in {out}" if wrote else "wrote nothing"
    return NoChromiumError(f"static figures ({', '.join(static)}) need Chromium, which kaleido {why} on this machine; "
                           f"{done} ({INSTALL})", why)
