"""The one figure style (``figures.py`` and the figure builders beside it): Okabe-Ito colours that stay
apart in grayscale through line dash and marker shape, and one-/two-column paper sizes."""

from __future__ import annotations

import plotly.graph_objects as go

BASE = {"color": "#0072B2", "dash": "solid", "symbol": "circle"}
TUNED = {"color": "#D55E00", "dash": "dash", "symbol": "square"}
SERIES = [("#0072B2", "solid", "circle"), ("#D55E00", "dash", "square"), ("#009E73", "dot", "diamond"),
          ("#CC79A7", "dashdot", "triangle-up"), ("#E69F00", "longdash", "x"), ("#56B4E9", "longdashdot", "cross")]
WIDTH = {"one": 336, "two": 687}  # px at 96/in: 3.5 in and 7.16 in
FONT = {"family": "Helvetica, Arial, sans-serif", "size": 10}


def style(fig: go.Figure, title: str, size: str = "one", height: int = 260, legend_below: bool = True) -> go.Figure:
    """``fig`` in the paper style: title, width of one or two columns, fonts, legend below (or top right)."""
    fig.update_layout(title={"text": title, "font": {"size": 11}, "y": 0.98, "yanchor": "top"}, width=WIDTH[size],
                      height=height, font=FONT, template="simple_white", margin={"l": 50, "r": 10, "t": 60, "b": 40},
                      legend={"font": {"size": 8}, "orientation": "h", **({"y": -0.3} if legend_below else
                                                                        {"y": 1.0, "x": 1.0, "xanchor": "right", "yanchor": "bottom"})})
    fig.update_annotations(font_size=10)  # subplot titles
    return fig


def line(x, y, name: str, look: tuple | dict, **kw) -> go.Scatter:
    """A lines-and-markers trace in ``look`` (``BASE``/``TUNED`` or a ``SERIES`` entry)."""
    color, dash, symbol = (look["color"], look["dash"], look["symbol"]) if isinstance(look, dict) else look
    return go.Scatter(x=x, y=y, name=name, mode="lines+markers", line={"color": color, "dash": dash, "width": 1.5},
                      marker={"symbol": symbol, "size": 5, "color": color}, **kw)
