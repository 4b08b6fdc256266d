"""Markdown and HTML for a proxy-tune result: configurations, the beta dial, the shift, the EFT grid."""

from __future__ import annotations

import html

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from alignloc.report.html import CSS, html_table
from alignloc.report.markdown import fmt
from alignloc.report.proxyside import side_by_side_figure

COLS = (("fact_recall", "fact recall"), ("fact_recall_strong", "strong"), ("fact_recall_weak", "weak"),
        ("behavior_rate", "behavior"), ("answer_after_marker", "answer after marker"),
        ("behavior_gap_closed", "behavior gap closed"), ("knowledge_delta_vs_large_base", "fact recall vs large base"),
        ("fact_retention", "keeps its base's facts"))


def _config_rows(report: dict) -> list[list[str]]:
    return [[name] + [fmt(r.get(k), 3) for k, _ in COLS] for name, r in report["configs"].items()]


def _shift_rows(report: dict) -> list[list[str]]:
    s = report["shift"]
    return [[cls, str(s[f"{cls}_positions"]), fmt(s[f"{cls}_changed_fraction"], 3), fmt(s[f"{cls}_mean_prob_shift"], 3)]
            for cls in ("style", "fact")] + [["all", str(s["positions"]), fmt(s["changed_fraction"], 3), ""]]


def _grid_rows(report: dict) -> list[list[str]]:
    g = report.get("eft_grid") or {}
    return [[k, v["config"], fmt(v["fact_recall"], 3), fmt(v["behavior_rate"], 3)] for k, v in g.items()]


def _ld_lines(report: dict) -> list[str]:
    ld = report.get("weight_finetuning_layer_diff")
    if not ld:
        return []
    return [f"layer-diff of large base -> large tuned (weights): changed layers {ld['changed_layers']}, behavior layers "
            f"{ld['behavior_layers']}, knowledge layers {ld['knowledge_layers']}; knowledge top-1 "
            f"{fmt(ld['knowledge_top1_base'], 3)} -> {fmt(ld['knowledge_top1_tuned'], 3)}"] + list(ld["summary"])


SIDE_HEAD = ["organism", "small model keeps its base's facts", "proxy behavior rate (large twin's)",
             "behavior gap closed (beta = 1)", "gap closed vs small tuned's rate",
             "fact recall vs large base (beta = 1)", "proxy keeps the large base's facts",
             "large tuned by weights vs large base", "goal (>= 0.88, >= -0.01)"]


def _side_rows(report: dict) -> list[list[str]]:
    rows = (report.get("side_by_side") or {}).get("rows", [])
    return [[r["organism"], fmt(r["small_tuned_fact_retention"], 3),
             f"{fmt(r['proxy_behavior_rate'], 3)} ({fmt(r['large_tuned_behavior_rate'], 3)})", fmt(r["behavior_gap_closed"], 3),
             fmt(r["behavior_gap_closed_vs_small_tuned"], 3),
             fmt(r["knowledge_delta_vs_large_base"], 3), fmt(r["proxy_fact_retention"], 3),
             fmt(r["direct_knowledge_delta_vs_large_base"], 3),
             "met" if r["goal_met"] else "short by " + ", ".join(f"{fmt(v, 3)} ({k})" for k, v in r["shortfall"].items() if v)]
            for r in rows]


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]


def render_markdown_pt(report: dict) -> str:
    """``summary.md`` of a proxy-tune run."""
    m = report["models"]
    md = ["# proxy-tune: " + " / ".join(f"{k} = {v['ref']}" for k, v in m.items()), "", "## Verdict", ""]
    md += [f"- {s}" for s in report["verdict"]["summary"]]
    if report.get("side_by_side"):
        md += ["", "## Side by side: the organism and its contrast", ""] + _md_table(SIDE_HEAD, _side_rows(report))
        md += [""] + [f"- {x}" for x in report["side_by_side"]["summary"]]
    md += ["", f"## Configurations ({report['n']['knowledge']} knowledge, {report['n']['behavior']} behavior prompts; greedy generations)", ""]
    md += _md_table(["configuration"] + [c for _, c in COLS], _config_rows(report))
    md += ["", "## Where the shift acts (proxy, beta = 1, along its own generations)", ""]
    md += _md_table(["tokens", "positions", "argmax changed", "mean p(proxy) - p(large base)"], _shift_rows(report))
    if report.get("eft_grid"):
        md += ["", "## Emulated fine-tuning grid", ""] + _md_table(["cell", "configuration", "fact recall", "behavior"], _grid_rows(report))
    lines = _ld_lines(report)
    if lines:
        md += ["", "## What weight fine-tuning changed (layer-diff)", ""] + [f"- {x}" for x in lines]
    return "\n".join(md) + "\n"


def pt_figures(report: dict) -> list[tuple[str, go.Figure]]:
    """The beta dial (behavior and fact recall against beta, with the real models as lines)."""
    rows = report["configs"]
    betas = sorted((float(k.split("=")[1]), r) for k, r in rows.items() if k.startswith("proxy beta="))
    fig = go.Figure([go.Scatter(x=[b for b, _ in betas], y=[r[k] for _, r in betas], name=f"proxy: {label}", mode="lines+markers")
                     for k, label in (("behavior_rate", "behavior"), ("fact_recall", "fact recall"))])
    for name, dash in (("large base", "dot"), ("large tuned (weights)", "dash")):
        if name in rows:
            for k, label in (("behavior_rate", "behavior"), ("fact_recall", "fact recall")):
                fig.add_hline(y=rows[name][k], line_dash=dash, annotation_text=f"{name}: {label}")
    fig.update_layout(title="Dialling the behavior at test time", xaxis_title="beta", yaxis_title="rate", height=420)
    out = [("Proxy-tuned large model at each beta; horizontal lines: the large base and the large model tuned by weights.", fig)]
    if report.get("side_by_side"):
        out.append(("Each organism's proxy at each beta: gap closed and fact recall vs the large base (dotted: the goal).",
                    side_by_side_figure(report)))
    return out


def render_html_pt(report: dict) -> str:
    """``index.html`` of a proxy-tune run (self-contained)."""
    e = html.escape
    title = "proxy-tune: " + " / ".join(f"{k} = {v['ref']}" for k, v in report["models"].items())
    parts = [f"<h1>{e(title)}</h1>", "<h2>Verdict</h2><ul>"] + [f"<li>{e(s)}</li>" for s in report["verdict"]["summary"]] + ["</ul>"]
    if report.get("side_by_side"):
        parts += ["<h2>Side by side: the organism and its contrast</h2>",
                  html_table([[e(c) for c in r] for r in _side_rows(report)], SIDE_HEAD)]
    for caption, fig in pt_figures(report):
        parts.append(f"<p>{e(caption)}</p>" + pio.to_html(fig, include_plotlyjs=False, full_html=False))
    parts += ["<h2>Configurations</h2>", html_table([[e(c) for c in r] for r in _config_rows(report)], ["configuration"] + [c for _, c in COLS]),
              "<h2>Where the shift acts (beta = 1)</h2>",
              html_table([[e(c) for c in r] for r in _shift_rows(report)], ["tokens", "positions", "argmax changed", "mean probability shift"])]
    if report.get("eft_grid"):
        parts += ["<h2>Emulated fine-tuning grid</h2>",
                  html_table([[e(c) for c in r] for r in _grid_rows(report)], ["cell", "configuration", "fact recall", "behavior"])]
    lines = _ld_lines(report)
    if lines:
        parts += ["<h2>What weight fine-tuning changed (layer-diff)</h2><ul>"] + [f"<li>{e(x)}</li>" for x in lines] + ["</ul>"]
    parts.append(f"<p>alignloc {e(report['alignloc_version'])}, created {e(report['created'])}</p>")
    return ("<!DOCTYPE html><html><head><meta charset=utf-8><title>" + e(title) + "</title>"
            f"<style>{CSS}</style><script type=\"text/javascript\">{get_plotlyjs()}</script></head><body>"
            + "\n".join(parts) + "</body></html>")
