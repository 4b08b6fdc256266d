"""``index.html``: interactive plotly figures, the verdict table and the pair's metadata.

Self-contained: plotly.js is inlined once, so the page opens offline. Every string that comes from
the user (model refs, prompt text, labels) goes through ``html.escape``; figure data is embedded
by plotly's JSON encoder, which escapes ``<`` and ``/`` in strings.
"""

from __future__ import annotations

import html

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from alignloc.report.answers import answers_html
from alignloc.report.causal import causal_figures, within_skipped
from alignloc.report.markdown import LINES, fmt, functional_lines
from alignloc.report.surfacing import surfacing_figure
from alignloc.report.whatchanged import what_changed_figures, what_changed_html

CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td.l{text-align:left}.hit{background:#ffe2c6;font-weight:bold}code{background:#f5f5f5;padding:1px 3px}"""


def _ci_trace(name: str, ci: dict, **kw) -> go.Scatter:
    x = list(range(len(ci["mean"])))
    hi = [h - m if h is not None and m is not None else None for h, m in zip(ci["hi"], ci["mean"], strict=True)]
    lo = [m - lo_ if lo_ is not None and m is not None else None for lo_, m in zip(ci["lo"], ci["mean"], strict=True)]
    return go.Scatter(x=x, y=ci["mean"], name=name, mode="lines+markers",
                      error_y={"type": "data", "array": hi, "arrayminus": lo, "visible": True}, **kw)


def _layout(fig: go.Figure, title: str, ytitle: str) -> go.Figure:
    fig.update_layout(title=title, xaxis_title="layer", yaxis_title=ytitle, height=360, margin={"t": 50, "b": 40},
                      hovermode="x unified", xaxis={"dtick": 1})
    return fig


def figures(report: dict) -> list[tuple[str, go.Figure]]:
    """The report's figures, each with a one-line caption."""
    m, v = report["measures"], report["verdict"]
    layers = list(range(report["pair"]["n_layers"]))
    out = []
    w = m["weights"]["layers"]
    fig = go.Figure([go.Bar(x=layers, y=[r["modules"].get(mod, 0.0) for r in w], name=mod)
                     for mod in ("attn", "mlp", "norm", "other") if any(mod in r["modules"] for r in w)])
    fig.add_trace(go.Scatter(x=layers, y=v["floors"]["weights"], name="noise floor", mode="lines", line={"dash": "dash"}))
    out.append(("Relative Frobenius norm of the weight change, per module.", _layout(fig, "Weights", "||ΔW|| / ||W||")))
    sh = m["shift"]
    fig = go.Figure([_ci_trace("relative L2", sh["relative_l2"]), _ci_trace("increment (this layer)", sh["relative_l2_increment"]),
                     _ci_trace("1 - cos", sh["one_minus_cos"]), _ci_trace("1 - linear CKA", {k: [1 - x for x in sh["cka"][k]] for k in ("mean", "hi", "lo")}),
                     go.Scatter(x=layers, y=v["floors"]["representation"], name="floor (increment)", mode="lines", line={"dash": "dash"})])
    out.append(("Residual-stream shift, tuned vs base, last token (95% bootstrap intervals).", _layout(fig, "Representation shift", "shift")))
    ln = m["lens"]
    fig = go.Figure([_ci_trace("all prompts", ln["kl"])] + [_ci_trace(k, ci) for k, ci in ln["kl_by_kind"].items()])
    out.append(("Logit lens: KL(base || tuned) of each layer's next-token distribution, by prompt kind.", _layout(fig, "Logit-lens divergence", "KL (nats)")))
    fig = go.Figure([go.Scatter(x=layers, y=ln["agreement_with_output"][s], name=s, mode="lines+markers") for s in ("base", "tuned")])
    out.append(("Fraction of prompts whose lens top-1 equals the model's own final top-1.", _layout(fig, "Lens agreement with own output", "fraction")))
    fig = go.Figure([_ci_trace(k, t["gap"]) for k, t in ln["target_logprob"].items() if k != "all"])
    out.append(("Tuned minus base lens log-prob of each prompt's target token: where the behavior / knowledge gap appears.",
                _layout(fig, "Target log-prob gap (lens)", "nats")))
    for kind, p in (m.get("probes") or {}).items():
        fig = go.Figure([go.Scatter(x=layers, y=p[k], name=k, mode="lines+markers")
                         for k in ("base", "tuned", "transfer", "control_base", "control_tuned")])
        fig.add_hline(y=p["majority"], line_dash="dot", annotation_text="majority")
        out.append((f"Linear probes for {kind} labels (cross-validated accuracy; control = shuffled-label task).",
                    _layout(fig, f"Probes: {kind}", "accuracy")))
    out += causal_figures(report.get("causal") or {})
    if m.get("surfacing"):
        out.append(("Surfaced vs installed: share of the tuned shift on behavior prompts inside the base's in-context "
                    "behavior subspace, with its noise floor (" + m["surfacing"]["verdict"]["label"] + ").",
                    surfacing_figure(m["surfacing"])))
    out += what_changed_figures(m.get("what_changed"))
    ratio = [[(e["value"] / e["floor"]) if e["floor"] and e["value"] is not None else None
              for e in sorted((e for e in v["evidence"] if e["line"] == ln_), key=lambda e: e["layer"])] for ln_ in LINES
             if any(e["line"] == ln_ for e in v["evidence"])]
    names = [ln_ for ln_ in LINES if any(e["line"] == ln_ for e in v["evidence"])]
    fig = go.Figure(go.Heatmap(z=ratio, x=layers, y=names, colorscale="RdBu", zmid=0, zmin=-5, zmax=5,
                               hovertemplate="line %{y}, layer %{x}<br>value / floor = %{z:.2f}<extra></extra>"))
    out.append(("Each evidence line as value / noise floor (|ratio| > 1 with its interval beyond the floor counts).",
                _layout(fig, "Evidence vs noise floor", "")))
    return out


def html_table(rows: list[list[str]], head: list[str]) -> str:
    """An HTML table; cells are escaped by the caller (a cell starting ``<td`` is used as is)."""
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def render_html(report: dict) -> str:
    """The whole page as one HTML string."""
    e = html.escape
    v, pair = report["verdict"], report["pair"]
    name = pair.get("name") or f"{pair['base']['ref']} -> {pair['tuned']['ref']}"
    parts = [f"<h1>layer-diff: {e(str(name))}</h1>", "<h2>Verdict</h2><ul>"]
    parts += [f"<li>{e(s)}</li>" for s in v["summary"]] + ["</ul>"]
    parts.append(html_table([[e(k), f"<td class=l>{e(str(v[k]))}</td>"] for k in
                         ("changed_layers", "behavior_layers", "knowledge_layers", "basis", "kind", "localized",
                          "knowledge_preserved", "floor_source") if k in v],
                        ["claim", "value"]))
    parts += ["<ul>"] + [f"<li>{e(x.removeprefix('- '))}</li>" for x in functional_lines(v)] + ["</ul>"]
    by = {(x["line"], x["layer"]): x for x in v["evidence"]}
    names = [ln for ln in LINES if any(k[0] == ln for k in by)]
    rows = []
    for layer in range(pair["n_layers"]):
        row = [str(layer)]
        for ln in names:
            x = by[(ln, layer)]
            cls = ' class="hit"' if x["above_floor"] else ""
            row.append(f"<td{cls} title=\"95% CI [{fmt(x['ci'][0])}, {fmt(x['ci'][1])}]\">{fmt(x['value'])} / {fmt(x['floor'])}</td>")
        rows.append(row)
    parts += ["<h2>Evidence per layer (value / floor; highlighted = beyond the floor)</h2>", html_table(rows, ["layer", *names])]
    for caption, fig in figures(report):
        parts.append(f"<p>{e(caption)}</p>" + pio.to_html(fig, include_plotlyjs=False, full_html=False))
    parts += [f"<p class=note>{e(s)}</p>" for s in within_skipped(report.get("causal") or {})]
    parts.append(what_changed_html(report))
    parts.append(answers_html(report))
    parts.append("<h2>Outputs by prompt kind</h2>")
    parts.append(html_table([[e(k), str(o["n"]), fmt(o["logprob_base"], 2), fmt(o["logprob_tuned"], 2),
                          f"{o['logprob_delta']['mean']:+.2f}", f"{100 * o['accuracy_base']:.1f}%", f"{100 * o['accuracy_tuned']:.1f}%"]
                         for k, o in report["measures"]["outputs"].items()],
                        ["kind", "n", "log-prob base", "log-prob tuned", "change", "top-1 base", "top-1 tuned"]))
    meta = [[e(side), f"<td class=l>{e(str(pair[side].get(k)))}</td>", e(k)] for side in ("base", "tuned")
            for k in ("ref", "path", "adapter", "model_type", "weights_sha256", "tokenizer_sha256")]
    parts += ["<h2>Pair</h2>", html_table([[r[0], r[2], r[1]] for r in meta], ["side", "field", "value"])]
    if report.get("ground_truth"):
        gt = report["ground_truth"]
        parts.append(f"<p>Ground truth (planted): layers {e(str(gt.get('layers')))}, modules {e(str(gt.get('modules')))}</p>")
    parts.append("<h2>Example prompts</h2>")
    parts.append(html_table([[e(p["id"]), e(p["kind"]), f"<td class=l>{e(p['text'])}</td>", e(str(p.get("target")))]
                         for p in report["prompts"]["examples"]], ["id", "kind", "text", "target"]))
    parts.append(f"<p>alignloc {e(report['alignloc_version'])}, report schema {report['schema_version']}, "
                 f"created {e(report['created'])}; settings {e(str(report['settings']))}</p>")
    return ("<!DOCTYPE html><html><head><meta charset=utf-8><title>layer-diff: " + e(str(name)) + "</title>"
            f"<style>{CSS}</style><script type=\"text/javascript\">{get_plotlyjs()}</script></head><body>"
            + "\n".join(parts) + "</body></html>")
