"""The side-by-side figure of a proxy-tune result with a contrast organism (``side_by_side`` in the JSON).

Two panels against beta, one line per organism: the behavior gap the proxy closes (against the weaker
of its two references, the large model tuned by weights and the small tuned model), and its fact
recall against the large base (points), with the goal lines (88% of the gap; -1 pt of facts).
A knowledge-keeping organism's line stays near 0 on the right while a forgetting one's falls:
the proxy inherits the small fine-tune's forgetting.
"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from alignloc.report.figstyle import SERIES, line, style


def side_by_side_figure(r: dict) -> go.Figure:
    """Gap closed and fact recall vs the large base (pt) against beta for every organism of ``r["side_by_side"]``."""
    rows = r["side_by_side"]["rows"]
    goal = r["verdict"]["goal"]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("behavior gap closed (weaker reference)", "fact recall vs large base (pt)"),
                        horizontal_spacing=0.16)
    for i, row in enumerate(rows):
        betas = sorted(row["by_beta"], key=float)
        x = [float(b) for b in betas]
        name = f"{row['organism'].removeprefix('zoo:')} (retention {row['small_tuned_fact_retention']:.2f})"
        look = SERIES[i % len(SERIES)]
        fig.add_trace(line(x, [row["by_beta"][b]["goal_gap_closed"] for b in betas], name, look, legendgroup=name), 1, 1)
        fig.add_trace(line(x, [100 * row["by_beta"][b]["knowledge_delta_vs_large_base"] for b in betas], name, look,
                           legendgroup=name, showlegend=False), 1, 2)
    fig.add_hline(y=goal["behavior_gap_closed_min"], line={"color": "#999999", "dash": "dot", "width": 1}, row=1, col=1)
    fig.add_hline(y=100 * goal["knowledge_delta_vs_large_base_min"], line={"color": "#999999", "dash": "dot", "width": 1},
                  row=1, col=2)
    fig.update_xaxes(title_text="beta")
    return style(fig, "Proxy-tuning: a chat organism that keeps its knowledge vs one that forgets", "two", 320)
