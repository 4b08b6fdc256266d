"""Number formatting shared by every Markdown and HTML renderer."""

from __future__ import annotations


def fmt(x, nd: int = 3) -> str:
    """A number for a table cell ("-" for missing)."""
    return "-" if x is None else f"{x:.{nd}f}"
