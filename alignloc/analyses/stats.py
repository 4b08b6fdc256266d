"""Uncertainty and noise floors: bootstrap over prompts, and "is this layer above the floor?".

A per-layer statistic is a mean over prompts (or a dataset-level value such as CKA); its 95%
interval comes from resampling prompts with replacement. A layer counts as *changed* only when
the lower end of its interval clears the noise floor (see ``above_floor``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from jaxtyping import Float


def bootstrap_indices(n: int, n_boot: int = 1000, seed: int = 0) -> torch.Tensor:
    """``[n_boot, n]`` prompt indices drawn with replacement (deterministic for a seed)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, n, (n_boot, n), generator=g)


def mean_ci(
    x: Float[torch.Tensor, "n ..."], n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, list | float]:
    """Mean over the first axis with a percentile bootstrap interval: ``{"mean", "lo", "hi"}``.

    Values are floats for ``x [n]`` and lists for ``x [n, k]`` (one interval per column).
    """
    x = x.double()
    idx = bootstrap_indices(x.shape[0], n_boot, seed)
    means = x[idx].mean(dim=1)  # [n_boot, *rest]
    a = (1 - level) / 2
    lo, hi = torch.quantile(means, a, dim=0), torch.quantile(means, 1 - a, dim=0)
    m = x.mean(dim=0)
    return {"mean": m.tolist(), "lo": lo.tolist(), "hi": hi.tolist()}


def stat_ci(
    fn: Callable[[torch.Tensor], float], n: int, n_boot: int = 200, seed: int = 0, level: float = 0.95
) -> dict[str, float]:
    """A dataset-level statistic ``fn(indices)`` with a bootstrap interval over prompts."""
    idx = bootstrap_indices(n, n_boot, seed)
    vals = np.array([fn(row) for row in idx])
    a = (1 - level) / 2
    return {"mean": float(fn(torch.arange(n))), "lo": float(np.quantile(vals, a)), "hi": float(np.quantile(vals, 1 - a))}


def increments(values: list[float], start: float = 0.0) -> list[float]:
    """Per-layer change of a cumulative quantity: ``v[l] - v[l-1]`` (``v[-1] = start``)."""
    prev = [start, *values[:-1]]
    return [v - p for v, p in zip(values, prev, strict=True)]


def background(values: list[float], quantile: float = 0.25) -> float:
    """The pair's own typical per-layer value (a low quantile across layers): what a layer must
    stand out from when no control pair gives a floor."""
    return float(np.quantile(np.asarray(values, dtype=float), quantile)) if values else 0.0


def above_floor(lo: list[float], floor: list[float] | float) -> list[int]:
    """Layers whose interval's lower end ``lo[l]`` exceeds ``floor[l]`` (or one shared floor)."""
    fl = floor if isinstance(floor, list) else [floor] * len(lo)
    return [i for i, (a, f) in enumerate(zip(lo, fl, strict=True)) if a > f]
