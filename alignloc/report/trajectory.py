"""The trajectory figure: stage x layer heatmaps of a chain's layer-diff lines (``alignloc.experiments.trajectory``
computes them); ``trajectory.html`` always, ``trajectory.png`` when kaleido can draw it."""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from alignloc.errors import OutputError, one_line
from alignloc.store.outputs import write_outputs

STEM = "trajectory"


def stage_labels(refs: list[str], width: int = 30) -> list[str]:
    """Short names of checkpoint references: the last path component, or as many trailing components
    as it takes to tell them apart (``sft/tuned`` and ``dpo/tuned`` rather than ``tuned`` twice)."""
    parts = [r.rstrip("/").split("/") for r in refs]
    for k in range(1, max((len(p) for p in parts), default=1) + 1):
        names = ["/".join(p[-k:]) for p in parts]
        if len(set(names)) == len(names):
            break
    return [n[-width:] for n in names]


def trajectory_figure(stages: list[dict]) -> go.Figure:
    """Stage x layer heatmaps: relative weight change and residual-shift increment, per step and from the base."""
    fig = make_subplots(rows=2, cols=2, shared_yaxes=True, vertical_spacing=0.2, horizontal_spacing=0.05,
                        subplot_titles=("ΔW/W, step k-1 -> k", "ΔW/W, base -> k",
                                        "residual shift increment, step", "residual shift increment, base -> k"))
    y = [f"{s['stage']}: {label}" for s, label in zip(stages, stage_labels([s["ref"] for s in stages]), strict=True)]
    n_layers = len(stages[0]["step"]["weights"]) if stages else 0
    dtick = 1 if n_layers <= 16 else 5 if n_layers <= 60 else 10  # readable ticks on deep models
    for row, (line, axis) in enumerate((("weights", "coloraxis"), ("residual_shift", "coloraxis2")), start=1):
        for col, which in enumerate(("step", "from_base"), start=1):
            z = [s[which][line] for s in stages]
            fig.add_trace(go.Heatmap(z=z, y=y, x=list(range(len(z[0]))), coloraxis=axis,
                                     hovertemplate=f"%{{y}}, layer %{{x}}<br>{line} %{{z:.4g}}<extra></extra>"), row, col)
            fig.update_xaxes(title_text="layer" if row == 2 else None, dtick=dtick, row=row, col=col)
    fig.update_layout(title="Where each stage lands", height=300 + 60 * len(stages), margin={"t": 80},
                      coloraxis={"colorscale": "Blues", "cmin": 0, "colorbar": {"title": "ΔW/W", "y": 0.8, "len": 0.4}},
                      coloraxis2={"colorscale": "Oranges", "cmin": 0, "colorbar": {"title": "shift", "y": 0.2, "len": 0.4}})
    return fig


def _static(fig: go.Figure, out: Path) -> str | None:
    """Write ``trajectory.png`` if kaleido can draw it; the reason it was skipped otherwise."""
    from alignloc.report.figfiles import NoChromiumError
    from alignloc.report.figures import export

    try:
        export([(STEM, fig)], out, ["png"])
    except NoChromiumError as e:
        return f"no static image: kaleido {e.why} Chromium (trajectory.html holds the figure)"
    except OutputError:
        raise
    except Exception as e:  # kaleido missing or broken: the HTML figure stands
        return f"no static image: {type(e).__name__} {one_line(e)[:200]}"
    return None


def write_trajectory_figure(stages: list[dict], out: Path) -> str | None:
    """Write ``trajectory.html`` (and ``trajectory.png`` when it can be drawn) under ``out``; why the png was
    skipped, or None."""
    fig = trajectory_figure(stages)
    write_outputs(out, {f"{STEM}.html": fig.to_html(include_plotlyjs=True, full_html=True).encode()})
    return _static(fig, out)
