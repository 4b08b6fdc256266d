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
from alignloc.report.figfiles import no_chromium, no_chromium_error
from alignloc.report.figstyle import BASE, SERIES, TUNED
from alignloc.report.figstyle import line as _line
from alignloc.report.figstyle import style as _style
from alignloc.report.proxyside import side_by_side_figure
from alignloc.report.surfacing import experiment_figures
from alignloc.store.manifest import file_mode
from alignloc.store.outputs import claim


def _shade(fig: go.Figure, layers: list[int], **kw) -> None:
    for layer in layers or []:
        fig.add_vrect(x0=layer - 0.4, x1=layer + 0.4, fillcolor="#999999", opacity=0.18, line_width=0, **kw)


class ResultError(UserError, ValueError):
    """A file given as a result is missing, not JSON, or not an alignloc result."""


def kind_of(result: dict) -> str:
    """Which experiment a JSON result came from."""
    if result.get("kind") == "rl-formats" and "scales" in result:
        return "rl-formats"
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
    raise ResultError("not an alignloc result (give a report.json of layer-diff, context-prior, proxy-tune, rl-formats or "
                      "localize-bench)")


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
    for kind, loc in ((r.get("causal") or {}).get("localize") or {}).items():
        prof = loc.get("profile") if isinstance(loc, dict) else None
        if prof:
            ks = list(range(1, len(prof["sets"]) + 1))
            fig = go.Figure()
            for i, key in enumerate(("sufficiency", "necessity")):
                ci = prof[key]
                fig.add_trace(_line(ks, ci["mean"], key, SERIES[i]))
                fig.add_trace(go.Scatter(x=ks + ks[::-1], y=ci["hi"] + ci["lo"][::-1], fill="toself", line_width=0,
                                         fillcolor=SERIES[i][0], opacity=0.2, showlegend=False, hoverinfo="skip"))
            fig.add_hline(y=0.8, line_dash="dot", line_color="#666666")
            fig.update_xaxes(title_text=f"k (top-k layers by {prof['ranking_source']})", dtick=1)
            fig.update_yaxes(title_text=f"fraction of the gap ({prof['metric']})")
            out.append((f"profile_{kind}_{name}", _style(fig, f"{name}: concentration profile ({kind})")))
    return out


def localize_bench_figures(r: dict) -> list[tuple[str, go.Figure]]:
    """hit@1 per method and tier (easy: confined edits; hard: the same under a drift of every layer; natural)
    and the layers each method flags on the tier's null pair without the gap gate (the gated false positives
    are 0 wherever the null pair's gap stays under it), or the gated ones for results that predate that count."""
    tiers = r["tiers"]
    methods = r["methods_run"]
    ungated = all("control_flags_ungated" in t["methods"][k] for t in tiers.values() for k in methods)
    fp_key = "control_flags_ungated" if ungated else "control_false_positives"  # gated flags are 0 below the gap
    fig = make_subplots(rows=1, cols=2, column_widths=[0.7, 0.3],
                        subplot_titles=("hit@1", "null-pair flags (no gap gate)" if ungated else "control false positives"))
    for i, (tier, t) in enumerate(tiers.items()):
        style = {"color": SERIES[i % len(SERIES)][0]} if i == 0 else {"color": "#BBBBBB", "pattern": {"shape": "/"}}
        fig.add_trace(go.Bar(x=methods, y=[t["methods"][k]["hit@1"] for k in methods], name=f"{tier} tier",
                             marker=style), 1, 1)
        fig.add_trace(go.Bar(x=methods, y=[t["methods"][k][fp_key] for k in methods], showlegend=False,
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


CP_KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (  # (label, name prefixes) of context-prior rows
    ("baseline", ("none",)), ("prompt-only fix", ("instruction", "repeat_context", "context_after_question")),
    ("steering", ("steer_",)), ("direction ablation", ("ablate_",)), ("MLP scaling", ("scale_subject_mlp",)),
    ("attention scaling", ("scale_last_token_attention",)), ("head scaling", ("scale_last_token_head_", "scale_context_heads")),
    ("unknown-entity patch", ("unknown_subject_patch",)),
)


def best_per_kind(r: dict, within_budget: bool = True) -> dict[str, dict | None]:
    """``{kind label: the row with the highest strong-prior follow rate}`` (None where no row qualifies)."""
    out: dict[str, dict | None] = {}
    for label, prefixes in CP_KINDS:
        rows = [x for x in r["rows"] if x["name"].startswith(prefixes) and (x["within_budget"] or not within_budget)]
        out[label] = max(rows, key=lambda x: x["follow_strong"]) if rows else None
    return out


def context_prior_compare(results: list[dict]) -> go.Figure:
    """Best strong-prior follow rate per kind of configuration, one bar series per result (model), within
    the collateral budget; open markers: the best at any collateral damage."""
    fig = go.Figure()
    labels = [label for label, _ in CP_KINDS]
    for i, r in enumerate(results):
        c, _, sym = SERIES[i % len(SERIES)]
        name = str(r.get("model", {}).get("ref", f"result {i + 1}"))
        ok, any_ = best_per_kind(r), best_per_kind(r, within_budget=False)
        fig.add_trace(go.Bar(x=labels, y=[ok[k]["follow_strong"] if ok[k] else 0.0 for k in labels], name=name,
                             marker={"color": c}, offsetgroup=str(i)))
        fig.add_trace(go.Scatter(x=labels, y=[any_[k]["follow_strong"] if any_[k] else None for k in labels],
                                 name=f"{name}, any damage", mode="markers", offsetgroup=str(i),
                                 marker={"symbol": f"{sym}-open", "size": 7, "color": c}))
    fig.add_hline(y=0.88, line={"dash": "dot", "width": 1, "color": "#555555"},
                  annotation_text="Yu et al. 2023: 88%", annotation_font_size=8)
    fig.update_layout(barmode="group", scattermode="group")
    fig.update_xaxes(tickangle=-35)
    fig.update_yaxes(title_text="follows context (strong prior)", range=[0, 1.05])
    return _style(fig, "Overriding a strong prior: best per kind (bars: within budget)", "two", 340, legend_below=False)


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
    side = [("proxy_tune_organisms", side_by_side_figure(r))] if r.get("side_by_side") else []
    return [("proxy_tune", _style(fig, "Proxy-tuning: the beta dial", "one", 330))] + side


def rl_formats_figures(r: dict) -> list[tuple[str, go.Figure]]:
    """Format shares before/after RL per scale, and the weight change per layer (``report/rlformats.py``)."""
    from alignloc.report.rlformats import rl_formats_figures as build

    return build(r, _style)


def surfacing_figures(r: dict) -> list[tuple[str, go.Figure]]:
    """Surfaced vs installed on the format organisms (``alignloc.report.surfacing``)."""
    return [(stem, _style(fig, title, "two", 330)) for stem, title, fig in experiment_figures(r)]


BUILDERS = {"layer-diff": layer_diff_figures, "localize-bench": localize_bench_figures,
            "context-prior": context_prior_figures, "proxy-tune": proxy_tune_figures, "rl-formats": rl_formats_figures,
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
    nothing half-written is left, and no success is claimed for a file that is not there. Without a
    Chromium for kaleido: ``NoChromiumError`` (``alignloc.report.figfiles``).
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
        try:
            pio.write_images(figs_all, [tmp / n for n in names], scale=[png_scale if n.endswith(".png") else 1 for n in names],
                             width=[f.layout.width for f in figs_all], height=[f.layout.height for f in figs_all])
        except Exception as e:  # kaleido without a Chromium: one line (make_figures writes the browser-free files first)
            why = no_chromium(e)
            if why is None:
                raise
            raise no_chromium_error(why, formats, out, []) from None
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
