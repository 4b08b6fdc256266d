"""Publication figures from alignloc's JSON results (layer-diff, localize-bench, context-prior, proxy-tune).

One style everywhere: layer on the x axis; base and tuned in fixed Okabe-Ito colours that stay
apart in grayscale through line dash and marker shape as well; planted layers shaded; sizes for
one-column (3.5 in) and two-column (7.1 in) papers. ``figures_for(result)`` builds plotly figures
(pure: no I/O); ``export`` writes them as PDF / SVG / PNG with kaleido (the system Chromium).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from alignloc.errors import OutputError, UserError, one_line
from alignloc.report.surfacing import experiment_figures
from alignloc.store.manifest import file_mode
from alignloc.store.outputs import claim

BASE = {"color": "#0072B2", "dash": "solid", "symbol": "circle"}
TUNED = {"color": "#D55E00", "dash": "dash", "symbol": "square"}
SERIES = [("#0072B2", "solid", "circle"), ("#D55E00", "dash", "square"), ("#009E73", "dot", "diamond"),
          ("#CC79A7", "dashdot", "triangle-up"), ("#E69F00", "longdash", "x"), ("#56B4E9", "longdashdot", "cross")]
WIDTH = {"one": 336, "two": 687}  # px at 96/in: 3.5 in and 7.16 in
FONT = {"family": "Helvetica, Arial, sans-serif", "size": 10}


def _style(fig: go.Figure, title: str, size: str = "one", height: int = 260, legend_below: bool = True) -> go.Figure:
    fig.update_layout(title={"text": title, "font": {"size": 11}, "y": 0.98, "yanchor": "top"}, width=WIDTH[size],
                      height=height, font=FONT, template="simple_white", margin={"l": 50, "r": 10, "t": 60, "b": 40},
                      legend={"font": {"size": 8}, "orientation": "h", **({"y": -0.3} if legend_below else
                                                                        {"y": 1.0, "x": 1.0, "xanchor": "right", "yanchor": "bottom"})})
    fig.update_annotations(font_size=10)  # subplot titles
    return fig


def _line(x, y, name: str, style: tuple | dict, **kw) -> go.Scatter:
    color, dash, symbol = (style["color"], style["dash"], style["symbol"]) if isinstance(style, dict) else style
    return go.Scatter(x=x, y=y, name=name, mode="lines+markers", line={"color": color, "dash": dash, "width": 1.5},
                      marker={"symbol": symbol, "size": 5, "color": color}, **kw)


def _shade(fig: go.Figure, layers: list[int], **kw) -> None:
    for layer in layers or []:
        fig.add_vrect(x0=layer - 0.4, x1=layer + 0.4, fillcolor="#999999", opacity=0.18, line_width=0, **kw)


class ResultError(UserError, ValueError):
    """A file given as a result is missing, not JSON, or not an alignloc result."""


def kind_of(result: dict) -> str:
    """Which experiment a JSON result came from."""
    if "measures" in result and "verdict" in result:
        return "layer-diff"
    if "tiers" in result and "methods_run" in result:
        return "localize-bench"
    if "rows" in result and "best_prompt_only_rate" in result.get("verdict", {}):
        return "context-prior"
    if "configs" in result and "eft_grid" in result:
        return "proxy-tune"
    if result.get("kind") == "surfacing-experiment":
        return "surfacing-experiment"
    raise ResultError("not an alignloc result (give a report.json of layer-diff, context-prior or proxy-tune, or "
                      "localize-bench --json output)")


def layer_diff_figures(r: dict) -> list[tuple[str, go.Figure]]:
    """Weights, representation shift and lens target gap per layer; probes and the patching grid if present."""
    name = str(r["pair"].get("name") or "pair")  # a title; file stems are slugged by figures_for
    planted = (r.get("ground_truth") or {}).get("layers") or []
    m, layers = r["measures"], list(range(r["pair"]["n_layers"]))
    fig = make_subplots(rows=1, cols=3, subplot_titles=("weights: ||ΔW||/||W||", "residual shift (increment)", "lens: target log-prob gap"))
    fig.add_trace(_line(layers, [x["relative_frobenius"] for x in m["weights"]["layers"]], "weights", SERIES[0]), 1, 1)
    fig.add_trace(_line(layers, m["shift"]["relative_l2_increment"]["mean"], "rel. L2 increment", SERIES[0], showlegend=False), 1, 2)
    for i, (kind, t) in enumerate((k, t) for k, t in m["lens"]["target_logprob"].items() if k != "all"):
        fig.add_trace(_line(layers, t["gap"]["mean"], kind, SERIES[(i + 1) % len(SERIES)]), 1, 3)
    for c in (1, 2, 3):
        _shade(fig, planted, row=1, col=c)
        fig.update_xaxes(title_text="layer", dtick=1, row=1, col=c)
    out = [(f"layerdiff_{name}", _style(fig, f"{name}: where the change is (planted layers shaded)", "two"))]
    for kind, p in (m.get("probes") or {}).items():
        fig = go.Figure([_line(layers, p["base"], "base", BASE), _line(layers, p["tuned"], "tuned", TUNED),
                         _line(layers, p["transfer"], "base probe on tuned", SERIES[2])])
        fig.add_hline(y=p["majority"], line_dash="dot", line_color="#666666")
        _shade(fig, planted)
        fig.update_xaxes(title_text="layer", dtick=1)
        fig.update_yaxes(title_text="probe accuracy")
        out.append((f"probes_{kind}_{name}", _style(fig, f"{name}: {kind} probes")))
    block = ((r.get("causal") or {}).get("patch") or {}).get("behavior")
    if block:
        g = block["patch"]["grid"]
        fig = go.Figure(go.Heatmap(z=g["recovered"], x=[f"{o} {t}" for o, t in zip(g["offsets"], g["tokens"], strict=True)],
                                   y=[f"L{x}" for x in g["layers"]], colorscale="Greys", zmin=0, zmax=1,
                                   colorbar={"title": {"text": "recovered", "side": "right"}, "thickness": 10}))
        fig.update_xaxes(title_text="position (offset, token)", tickangle=-45)
        out.append((f"patching_{name}", _style(fig, f"{name}: patching tuned resid_pre into base", "two", 280)))
    return out


def localize_bench_figures(r: dict) -> list[tuple[str, go.Figure]]:
    """hit@1 per method and tier (easy: confined edits; hard: the same under a drift of every layer)
    and each tier's control false positives."""
    tiers = r["tiers"]
    methods = r["methods_run"]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.7, 0.3], subplot_titles=("hit@1", "control false positives"))
    for i, (tier, t) in enumerate(tiers.items()):
        style = {"color": SERIES[i % len(SERIES)][0]} if i == 0 else {"color": "#BBBBBB", "pattern": {"shape": "/"}}
        fig.add_trace(go.Bar(x=methods, y=[t["methods"][k]["hit@1"] for k in methods], name=f"{tier} tier",
                             marker=style), 1, 1)
        fig.add_trace(go.Bar(x=methods, y=[t["methods"][k]["control_false_positives"] for k in methods], showlegend=False,
                             marker=style), 1, 2)
    fig.update_xaxes(tickangle=-45)
    return [("localize_bench", _style(fig, "Localization accuracy against the planted layers", "two", 330, legend_below=False))]


def context_prior_figures(r: dict) -> list[tuple[str, go.Figure]]:
    """Context-following on strong-prior conflicts against collateral damage, per configuration kind."""
    fig = go.Figure()
    for i, fam in enumerate(("baseline", "prompt", "rewrite", "intervention")):
        rows = [x for x in r["rows"] if x["family"] == fam]
        if rows:
            c, _, sym = SERIES[i]
            fig.add_trace(go.Scatter(x=[x["collateral"]["agree_drop"] + x["collateral"]["closed_drop"] for x in rows],
                                     y=[x["follow_strong"] for x in rows], mode="markers", name=fam,
                                     marker={"color": c, "symbol": sym, "size": 6, "line": {"width": 0.5, "color": "black"}}))
    fig.update_xaxes(title_text="accuracy lost (agreeing ctx + closed book)")
    fig.update_yaxes(title_text="follows context (strong prior)", range=[-0.05, 1.05])
    return [("context_prior", _style(fig, "Overriding a strong prior", "one", 300))]


def proxy_tune_figures(r: dict) -> list[tuple[str, go.Figure]]:
    """The beta dial (behavior and fact recall), with the large base and the large model tuned by weights."""
    c = r["configs"]
    betas = sorted((float(k.split("=")[1]), v) for k, v in c.items() if k.startswith("proxy beta="))
    x = [b for b, _ in betas]
    fig = go.Figure([_line(x, [v["behavior_rate"] for _, v in betas], "proxy: behavior", TUNED),
                     _line(x, [v["fact_recall"] for _, v in betas], "proxy: fact recall", BASE)])
    for name, dash in (("large base", "dot"), ("large tuned (weights)", "dashdot")):
        if name in c:
            for key, color, label in (("fact_recall", BASE["color"], "facts"), ("behavior_rate", TUNED["color"], "behavior")):
                fig.add_trace(go.Scatter(x=[x[0], x[-1]], y=[c[name][key]] * 2, mode="lines", name=f"{name}: {label}",
                                         line={"color": color, "dash": dash, "width": 1}, opacity=0.6))
    fig.update_xaxes(title_text="beta")
    fig.update_yaxes(title_text="rate", range=[-0.05, 1.05])
    return [("proxy_tune", _style(fig, "Proxy-tuning: the beta dial", "one", 330))]


def surfacing_figures(r: dict) -> list[tuple[str, go.Figure]]:
    """Surfaced vs installed on the format organisms (``alignloc.report.surfacing``)."""
    return [(stem, _style(fig, title, "two", 330)) for stem, title, fig in experiment_figures(r)]


BUILDERS = {"layer-diff": layer_diff_figures, "localize-bench": localize_bench_figures,
            "context-prior": context_prior_figures, "proxy-tune": proxy_tune_figures,
            "surfacing-experiment": surfacing_figures}


def figures_for(result: dict) -> list[tuple[str, go.Figure]]:
    """``[(file stem, figure)]`` for any alignloc JSON result; ResultError if a field is missing or malformed."""
    if not isinstance(result, dict):
        raise ResultError(f"not an alignloc result: a JSON {type(result).__name__}, not an object "
                          "(give a report.json written by alignloc)")
    kind = "alignloc"
    try:
        kind = kind_of(result)
        return [(slug(stem), fig) for stem, fig in BUILDERS[kind](result)]
    except ResultError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
        raise ResultError(f"an incomplete or edited {kind} result: {type(e).__name__} {one_line(e)[:200]} "
                          "(give a report.json as alignloc wrote it, or rerun the experiment)") from None


def slug(name: object, default: str = "pair") -> str:
    """A file-name-safe form of ``name``: letters, digits, ``.``, ``_`` and ``-`` only; never a path."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", str(name)).strip(".-")[:80]
    return s or default


def export(figs: list[tuple[str, go.Figure]], out: str | Path, formats: list[str], png_scale: int = 3) -> list[Path]:
    """Write each figure in each format under ``out`` (one Chromium session for all); the paths written.

    Figures are drawn into a temporary folder inside ``out``, each file checked to exist and be
    non-empty, then moved into place (only names alignloc may write, see ``alignloc.store.outputs``):
    nothing half-written is left, and no success is claimed for a file that is not there.
    """
    import plotly.io as pio

    bad = sorted(set(formats) - {"pdf", "svg", "png"})
    if bad:
        raise ValueError(f"unknown figure format(s) {bad}; use pdf, svg, png")
    names = [f"{stem}.{fmt}" for stem, _ in figs for fmt in formats]
    if len(set(names)) < len(names) or any(slug(stem, "") != stem for stem, _ in figs):
        raise ValueError(f"figure stems must be unique file-name-safe names, got {[stem for stem, _ in figs]}")
    out = claim(out, names)
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=".alignloc-figures-"))
    try:
        figs_all = [fig for _, fig in figs for _ in formats]
        pio.write_images(figs_all, [tmp / n for n in names], scale=[png_scale if n.endswith(".png") else 1 for n in names],
                         width=[f.layout.width for f in figs_all], height=[f.layout.height for f in figs_all])
        missing = [n for n in names if not (tmp / n).is_file() or (tmp / n).stat().st_size == 0]
        if missing:
            raise OutputError(f"{out}: the figure writer (kaleido) did not write {', '.join(missing[:3])} "
                              "(check that Chromium is installed: apt-get install chromium)")
        for n in names:
            os.chmod(tmp / n, file_mode())
            os.replace(tmp / n, out / n)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [out / n for n in names]
