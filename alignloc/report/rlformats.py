"""An rl-formats result rendered: ``summary.md``, and the figures of format shares before/after RL per
scale and of where the change landed.

Reads the result JSON only (``alignloc.experiments.rlformats`` writes it); never loads models.
"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

FORMAT_COLOURS = {"short": "#0072B2", "sentence": "#E69F00", "restate": "#009E73", "other": "#BBBBBB"}
FORMAT_PATTERNS = {"short": "", "sentence": "/", "restate": ".", "other": "x"}


def rl_formats_figures(r: dict, style) -> list[tuple[str, go.Figure]]:
    """Stacked format shares of sampled answers (base vs after RL) for each scale, with accuracy
    on top; and the per-layer weight change of each scale's RL. ``style(fig, title, size, height)``
    is ``figures._style``."""
    scales = r["scales"]
    x = [[f"{name} ({s['n_layers']}L)" for name, s in scales.items() for _ in (0, 1)],
         [side for _ in scales for side in ("base", "RL")]]
    fig = go.Figure()
    for f in (*r["formats"], "other"):
        y = [s[side]["shares"][f] for s in scales.values() for side in ("before", "after")]
        fig.add_trace(go.Bar(x=x, y=y, name=f, marker={"color": FORMAT_COLOURS.get(f, "#666666"),
                                                        "pattern": {"shape": FORMAT_PATTERNS.get(f, "")}}))
    acc = [s[side]["accuracy"] for s in scales.values() for side in ("before", "after")]
    fig.add_trace(go.Scatter(x=x, y=acc, name="accuracy", mode="markers",
                             marker={"symbol": "diamond", "size": 7, "color": "black"}))
    fig.update_layout(barmode="stack")
    fig.update_yaxes(title_text="share of sampled answers", range=[0, 1.05])
    out = [("rl_formats_shares", style(fig, "RL (reward = correctness only): answer formats", "one", 300))]
    lay = make_subplots(rows=1, cols=len(scales), subplot_titles=list(scales))
    for i, s in enumerate(scales.values(), start=1):
        w = s["layer_diff"]["weights_relative"]
        lay.add_trace(go.Scatter(x=list(range(len(w))), y=w, mode="lines+markers", showlegend=False,
                                 line={"color": "#D55E00"}), 1, i)
        lay.update_xaxes(title_text="layer", dtick=1, row=1, col=i)
    lay.update_yaxes(title_text="||ΔW||/||W||", row=1, col=1)
    out.append(("rl_formats_layers", style(lay, "Where RL wrote: weight change per layer", "two", 240)))
    return out


def render_markdown_rl(result: dict) -> str:
    """``summary.md``: the verdict, and the shares before/after per scale."""
    formats = result["formats"]
    md = ["# RL format amplification (rl-formats)", "", "## Verdict", ""]
    md += [f"- {x}" for x in result["verdict"]["summary"]]
    md += ["", "## Format shares of sampled answers, before -> after RL", "",
           "| organism | layers | " + " | ".join(formats) + " | other | accuracy | collapse | layer-diff behavior layers "
           "| surfaced or installed |",
           "|" + "---|" * (len(formats) + 7)]
    for name, s in result["scales"].items():
        b, a = s["before"]["shares"], s["after"]["shares"]
        cells = [f"{b[f]:.2f} -> {a[f]:.2f}" for f in (*formats, "other")]
        acc = f"{s['before']['accuracy']:.2f} -> {s['after']['accuracy']:.2f}"
        col = s["collapse"]["format"] or "none"
        md.append(f"| {name} | {s['n_layers']} | " + " | ".join(cells) + f" | {acc} | {col} | "
                  f"{s['layer_diff']['behavior_layers']} | {((s.get('surfacing') or {}).get('verdict') or {}).get('label', '-')} |")
    return "\n".join(md) + "\n"
