"""Surfaced vs installed in the reports: the layer-diff section (Markdown, HTML figure) and the
figure of the validation experiment (``surfacing_experiment``'s JSON, kind ``surfacing-experiment``).

Reads results only (``measures.surfacing`` of a layer-diff report, or the experiment's result).
"""

from __future__ import annotations

import plotly.graph_objects as go

from alignloc.report.text import fmt

HEAD = ("| layer | share [95% CI] | floor (random / placebo) | amplification | cos(shift, base direction) | "
        "tuned direction: cos / norm ratio | label |")


def surfacing_rows(s: dict) -> list[str]:
    """Markdown table rows of ``measures.surfacing`` (one per layer)."""
    rows = [HEAD, "|---|---|---|---|---|---|---|"]
    for i, (r, lab) in enumerate(zip(s["layers"], s["verdict"]["layer_labels"], strict=True)):
        ci = r.get("share_ci")
        interval = f" [{fmt(ci[0], 3)}, {fmt(ci[1], 3)}]" if ci else ""
        rows.append(f"| {i} | {fmt(r['share'], 3)}{interval} | {fmt(r['floor'], 3)} ({fmt(r['null_random']['q'], 3)} / "
                    f"{fmt(r['null_placebo']['q'], 3)}) | {r['amplification']:+.2f} | {r['cosine']:+.2f} | "
                    f"{r.get('tuned_direction_cosine', float('nan')):+.2f} / "
                    f"{r.get('tuned_direction_norm_ratio', float('nan')):.2f} | {lab} |")
    return rows


def surfacing_markdown(report: dict) -> list[str]:
    """The report's "Surfaced vs installed" section (empty without demonstration prompts)."""
    s = report["measures"].get("surfacing")
    if not s:
        return []
    k = s["config"]["k"]
    return ["", "## Surfaced vs installed", "",
            f"- {s['verdict']['summary']}",
            f"- share = energy of the tuned-minus-base mean shift on {s['n_behavior']} behavior prompts inside the "
            f"base's {k}-dim in-context behavior subspace (from {s['n_demo_pairs']} matched demonstration pairs); floor = "
            f"the {s['config']['quantile']:.0%} quantile of a random {k}-dim subspace and of placebo contrasts"
            + (", or the control pair's share" if "control_share" in s["layers"][0] else "")
            + "; amplification = the shift along the base's behavior direction in units of the base's own in-context "
              "difference", ""] + surfacing_rows(s)


def surfacing_figure(s: dict, title: str = "Surfaced vs installed") -> go.Figure:
    """Per-layer share of the shift inside the base's behavior subspace, with the floor."""
    x = list(range(len(s["layers"])))
    fig = go.Figure([
        go.Scatter(x=x, y=[r["share"] for r in s["layers"]], name="share in base subspace", mode="lines+markers"),
        go.Scatter(x=x, y=[r["floor"] for r in s["layers"]], name="noise floor", mode="lines", line={"dash": "dash"}),
        go.Scatter(x=x, y=[r["null_random"]["mean"] for r in s["layers"]], name="random subspace (mean, k/d)",
                   mode="lines", line={"dash": "dot"}),
    ])
    fig.update_layout(title=title, xaxis_title="layer", yaxis_title="share of shift energy", yaxis_range=[0, 1.05])
    return fig


COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")  # Okabe-Ito, as report.figures
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")


def experiment_figures(r: dict) -> list[tuple[str, str, go.Figure]]:
    """The validation experiment, ``[(stem, title, figure)]`` (``report.figures`` styles them):
    per-layer share for each organism (expected -> measured label in the legend) with its noise
    floor, and the amplification coefficient."""
    fig_s, fig_a = go.Figure(), go.Figure()
    for i, (name, o) in enumerate(r["organisms"].items()):
        color, dash = COLORS[i % len(COLORS)], DASHES[i % len(DASHES)]
        x = list(range(len(o["layers"])))
        line = {"color": color, "dash": dash, "width": 1.5}
        tag = f"{name} ({o['expected'] or 'unknown'} -> {o['verdict']['label']})"
        fig_s.add_trace(go.Scatter(x=x, y=[row["share"] for row in o["layers"]], name=tag, mode="lines+markers", line=line))
        fig_s.add_trace(go.Scatter(x=x, y=[row["floor"] for row in o["layers"]], name=f"floor: {name}", mode="lines",
                                   line={"color": color, "dash": "dot", "width": 1}, opacity=0.7))
        fig_a.add_trace(go.Scatter(x=x, y=[row["amplification"] for row in o["layers"]], name=name, mode="lines+markers",
                                   line=line))
    fig_s.update_xaxes(title_text="layer", dtick=1)
    fig_s.update_yaxes(title_text="share of shift in base subspace", range=[0, 1.05])
    fig_a.add_hline(y=1.0, line_dash="dot", line_color="#777777")
    fig_a.update_xaxes(title_text="layer", dtick=1)
    fig_a.update_yaxes(title_text="amplification (x base demo gap)")
    return [("surfacing_share", "Tuned shift along the base's behavior subspace", fig_s),
            ("surfacing_amplification", "Amplification of the base's behavior direction", fig_a)]
