"""Markdown and HTML for a context-prior result: the verdict, every configuration, and two figures."""

from __future__ import annotations

import html

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from alignloc.report.html import CSS, html_table
from alignloc.report.markdown import fmt


def _label(r: dict) -> str:
    parts = [r["name"]]
    if r.get("layer") is not None:
        parts.append(f"L{r['layer']}")
    if r.get("strength") is not None:
        parts.append(f"x{r['strength']}")
    if r.get("gated"):
        parts.append("(context only)")
    return " ".join(parts)


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def _rows(report: dict) -> list[list[str]]:
    out = []
    for r in report["rows"]:
        c = r["collateral"]
        out.append([_label(r), r["family"], _pct(r["follow_strong"]), _pct(r["memory_strong"]), _pct(r["follow_weak"]),
                    _pct(r["acc_agree"]), _pct(r["acc_closed"]), fmt(r["ppl"], 2),
                    f"{-100 * c['agree_drop']:+.0f} / {-100 * c['closed_drop']:+.0f} / x{c['ppl_ratio']:.2f}",
                    "yes" if r["within_budget"] else "no"])
    return out


HEAD = ["configuration", "kind", "follow (strong)", "memory (strong)", "follow (weak)", "acc. agreeing ctx",
        "acc. closed-book", "perplexity", "collateral (agree / closed pts, ppl)", "within budget"]


def render_markdown_cp(report: dict) -> str:
    """``summary.md`` of a context-prior run."""
    v, n = report["verdict"], report["n"]
    md = [f"# context-prior: {report['model']['ref']}", "", "## Verdict", ""] + [f"- {s}" for s in v["summary"]]
    md += ["", f"Prompts: {n['strong']} strong-prior and {n['weak']} weak-prior conflicts, {n['agree']} agreeing-context, "
           f"{n['closed']} closed-book; {n['texts']} plain-text passages. Budget for small collateral damage: "
           f"{report['budget']}. Rates are context-following on conflicts unless named otherwise.", "",
           "| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    md += ["| " + " | ".join(row) + " |" for row in _rows(report)]
    return "\n".join(md) + "\n"


def cp_figures(report: dict) -> list[tuple[str, go.Figure]]:
    """Context-following vs collateral damage, and the best rate per intervention and layer."""
    rows = report["rows"]
    fig = go.Figure()
    for fam in ("baseline", "prompt", "rewrite", "intervention"):
        rs = [r for r in rows if r["family"] == fam]
        if rs:
            fig.add_trace(go.Scatter(x=[r["collateral"]["closed_drop"] + r["collateral"]["agree_drop"] for r in rs],
                                     y=[r["follow_strong"] for r in rs], mode="markers", name=fam,
                                     text=[_label(r) for r in rs], hovertemplate="%{text}<br>damage %{x:.2f}, follow %{y:.2f}<extra></extra>"))
    fig.update_layout(title="Context-following on strong-prior conflicts vs collateral damage", height=420,
                      xaxis_title="accuracy lost on agreeing-context + closed-book prompts", yaxis_title="follow rate")
    out = [("Each configuration: how often strong-prior conflicts follow the context, against what it costs elsewhere.", fig)]
    inter = [r for r in rows if r["family"] == "intervention"]
    names = sorted({r["name"] for r in inter})
    layers = sorted({r["layer"] for r in inter})
    z = [[max((r["follow_strong"] for r in inter if r["name"] == nm and r["layer"] == layer and r["within_budget"]),
              default=None) for layer in layers] for nm in names]
    fig = go.Figure(go.Heatmap(z=z, x=[f"L{layer}" for layer in layers], y=names, zmin=0, zmax=1, colorscale="Viridis",
                               hovertemplate="%{y} at %{x}: %{z:.2f}<extra></extra>"))
    fig.update_layout(title="Best follow rate within the collateral budget, per intervention and layer", height=420)
    out.append(("Blank cells: no strength of that intervention at that layer stays within the budget.", fig))
    return out


def render_html_cp(report: dict) -> str:
    """``index.html`` of a context-prior run (self-contained)."""
    e = html.escape
    v = report["verdict"]
    title = f"context-prior: {report['model']['ref']}"
    parts = [f"<h1>{e(title)}</h1>", "<h2>Verdict</h2><ul>"] + [f"<li>{e(s)}</li>" for s in v["summary"]] + ["</ul>"]
    for caption, fig in cp_figures(report):
        parts.append(f"<p>{e(caption)}</p>" + pio.to_html(fig, include_plotlyjs=False, full_html=False))
    parts += ["<h2>Every configuration</h2>", html_table([[e(c) for c in row] for row in _rows(report)], HEAD)]
    parts.append(f"<p>alignloc {e(report['alignloc_version'])}, created {e(report['created'])}; instruction "
                 f"{e(report['instruction'])!r}</p>")
    return ("<!DOCTYPE html><html><head><meta charset=utf-8><title>" + e(title) + "</title>"
            f"<style>{CSS}</style><script type=\"text/javascript\">{get_plotlyjs()}</script></head><body>"
            + "\n".join(parts) + "</body></html>")
