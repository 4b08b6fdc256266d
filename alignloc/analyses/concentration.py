"""The concentration profile's numbers from per-prompt metric values (pure; ``causal.profile`` runs the grafts).

sufficiency(k) and necessity(k) of nested layer sets as ratios of means over prompts, with percentile
bootstrap intervals, and the smallest k that carries a share of the gap each way.
"""

from __future__ import annotations

import torch
from jaxtyping import Float

LEVELS = (0.5, 0.8, 0.9)


def ratio_ci(num: Float[torch.Tensor, "k n"], den: Float[torch.Tensor, " n"], idx: torch.Tensor) -> dict[str, list[float]]:
    """``mean(num[k]) / mean(den)`` per row k, with the 2.5 / 97.5 percentiles over the resamples ``idx`` [B, n]."""
    point = (num.mean(-1) / den.mean()).tolist()
    boot = num[:, idx].mean(-1) / den[idx].mean(-1)  # [k, B]
    lo, hi = torch.nanquantile(boot, 0.025, dim=1), torch.nanquantile(boot, 0.975, dim=1)
    return {"mean": point, "lo": lo.tolist(), "hi": hi.tolist()}


def smallest_k(values: list[float], level: float) -> int | None:
    """The smallest k (1-based) whose value reaches ``level``; None if none does."""
    return next((k for k, v in enumerate(values, 1) if v == v and v >= level), None)


def profile_from(m_base: torch.Tensor, m_tuned: torch.Tensor, up: torch.Tensor, down: torch.Tensor,
                 sets: list[list[int]], n_boot: int = 1000, seed: int = 0) -> dict:
    """The profile from per-prompt values: ``m_base``, ``m_tuned`` [n], ``up`` / ``down`` [k, n] (the base with
    the tuned ``sets[k]``, the tuned with the base's). Pure: no model runs here."""
    gap = m_tuned - m_base  # [n]
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(gap), (n_boot, len(gap)), generator=gen)  # [B, n]
    suff = ratio_ci(up - m_base, gap, idx)
    nec = ratio_ci(m_tuned - down, gap, idx)
    return {
        "gap": float(gap.mean()), "n": len(gap), "n_boot": n_boot, "sets": sets,
        "sufficiency": suff, "necessity": nec,
        "k_sufficient": {str(q): smallest_k(suff["mean"], q) for q in LEVELS},
        "k_necessary": {str(q): smallest_k(nec["mean"], q) for q in LEVELS},
    }


def at_k(profile: dict, k: int) -> dict:
    """The profile's numbers for the set of size ``k``: layers, sufficiency and necessity with intervals."""
    i = k - 1
    s, n = profile["sufficiency"], profile["necessity"]
    return {"k": k, "layers": profile["sets"][i], "sufficiency": s["mean"][i], "sufficiency_ci": [s["lo"][i], s["hi"][i]],
            "necessity": n["mean"][i], "necessity_ci": [n["lo"][i], n["hi"][i]]}
