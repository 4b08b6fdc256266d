"""Attribution patching as a triage for exact patching: estimate every layer, patch only the ones that matter.

An exact patch sweep costs a (resumed) forward per cell; attribution patching
(``causal.attribution``) estimates every cell from one backward pass. ``triaged_layers`` ranks the
layers by the largest estimated effect in any of their cells and keeps the top ``k``; the sweep then
patches those layers exactly (for a layer x position grid, ``triaged_cells`` keeps the top cells
instead; for the whole residual, ``spaced_layers`` keeps ``k`` evenly spaced layers), and ``confirm`` lays the exact values out over every layer (``None`` where a layer or
cell was not confirmed) with the agreement of the two: the Spearman correlation of
estimate and exact value over the confirmed cells, and whether the layer with the largest exact
effect is the one attribution put first. The exact per-layer patching that the verdict reads is
never triaged (``causal.report``); the report's other sweeps are, under ``--budget standard``.
"""

from __future__ import annotations

import math

import torch


def confirm_count(n_layers: int) -> int:
    """How many layers a triaged sweep patches exactly: a third of them, at least 4 (every layer of a small model)."""
    return min(n_layers, max(4, math.ceil(n_layers / 3)))


def confirm_cells(n_layers: int, width: int) -> int:
    """How many cells of a ``n_layers x width`` layer x position grid a triaged grid patches exactly: as many as
    ``confirm_count`` layers of a third of the positions (every cell where ``confirm_count`` is every layer)."""
    k = confirm_count(n_layers)
    return n_layers * width if k >= n_layers else k * max(1, math.ceil(width / 3))


def triaged_cells(layers: list[int], estimates: list[list], offsets: list[int], n: int) -> list[tuple[int, int]]:
    """The ``n`` ``(layer, offset)`` cells of a grid (``estimates[layer][offset]``) whose estimated effect is largest
    in magnitude (NaN counts as 0; ties to the earlier layer, then offset), in grid order."""
    cells = [(i, j) for i in range(len(layers)) for j in range(len(offsets))]
    order = sorted(cells, key=lambda c: -_strength(estimates[c[0]][c[1]]))
    return sorted((layers[i], offsets[j]) for i, j in order[:n])


def _strength(row) -> float:
    """The largest |value| of a layer's estimate (one number, or one per position); NaN counts as 0."""
    vals = row if isinstance(row, list) else [row]
    return max((abs(v) for v in vals if v is not None and v == v), default=0.0)


def triaged_layers(layers: list[int], estimates: list, k: int) -> list[int]:
    """The ``k`` layers (of ``layers``, in their order) whose estimated effect (``estimates``, per layer: a
    number or a row per position) is largest in magnitude; ties to the earlier layer."""
    order = sorted(range(len(layers)), key=lambda i: -_strength(estimates[i]))
    return sorted(layers[i] for i in order[:k])


def spaced_layers(layers: list[int], k: int) -> list[int]:
    """``k`` of ``layers`` evenly spaced, the last one included: what a triage confirms of a whole-residual sweep,
    whose recovered share grows with depth and which the linear estimate does not rank (Spearman -0.2 on an 8-layer
    organism), so a coarse curve says more than the estimate's top layers."""
    n = len(layers)
    return sorted({layers[max(0, round((i + 1) * n / k) - 1)] for i in range(min(k, n))})


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman rank correlation of two equal-length lists (average ranks for ties; NaN if constant)."""
    def ranks(x: list[float]) -> torch.Tensor:
        t = torch.tensor(x, dtype=torch.float64)
        r = torch.empty_like(t)
        r[t.argsort()] = torch.arange(len(t), dtype=torch.float64)
        for v in t.unique():  # ties share their mean rank
            r[t == v] = r[t == v].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


def confirm(exact: dict, estimate: list, layers: list[int]) -> dict:
    """The exact sweep over the confirmed layers (``exact``: a ``patch_sweep`` / ``within_sweep`` result)
    spread over all ``layers`` (``None`` where not confirmed), with ``triage``: the estimate of every layer
    (``estimate``, in the same shape as ``recovered``), the confirmed layers and the agreement."""
    done = dict(zip(exact["layers"], exact["recovered"], strict=True))
    width = len(exact["recovered"][0]) if exact["recovered"] and isinstance(exact["recovered"][0], list) else None
    blank = None if width is None else [None] * width
    out = {**exact, "layers": layers, "recovered": [done.get(layer, blank) for layer in layers]}
    if "patched" in exact:
        p = dict(zip(exact["layers"], exact["patched"], strict=True))
        out["patched"] = [p.get(layer, blank) for layer in layers]
    flat = lambda x: x if isinstance(x, list) else [x]  # noqa: E731
    est = {layer: e for layer, e in zip(layers, estimate, strict=True)}
    pairs = [(a, b) for layer in exact["layers"] for a, b in zip(flat(est[layer]), flat(done[layer]), strict=True)
             if a is not None and b is not None and a == a and b == b]
    top_exact = max(exact["layers"], key=lambda layer: _strength(done[layer]), default=None)
    top_est = max(layers, key=lambda layer: _strength(est[layer]), default=None)
    out["triage"] = {"estimate": estimate, "confirmed": list(exact["layers"]),
                     "spearman": spearman([a for a, _ in pairs], [b for _, b in pairs]) if len(pairs) >= 3 else math.nan,
                     "top_layer_agrees": top_exact == top_est}
    return out
