"""Number formatting shared by every Markdown and HTML renderer."""

from __future__ import annotations


def fmt(x, nd: int = 3) -> str:
    """A number for a table cell ("-" for missing); a nonzero value that ``nd`` decimals would round
    to zero keeps two significant digits (a relative weight change of 4e-4 prints as ``4.0e-04``,
    not ``0.000``)."""
    if x is None:
        return "-"
    if x != 0 and x == x and abs(x) < 10**-nd:
        return f"{x:.1e}"
    return f"{x:.{nd}f}"
