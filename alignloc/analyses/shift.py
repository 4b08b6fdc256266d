"""Representation shift between base and tuned activations at one site.

``1 - cos`` and relative L2 per prompt (mean over prompts per layer), from stored activations.
"""

from __future__ import annotations

import torch
from jaxtyping import Float


def cosine_shift(h_base: Float[torch.Tensor, "n d"], h_tuned: Float[torch.Tensor, "n d"]) -> Float[torch.Tensor, " n"]:
    """``1 - cos(h_base, h_tuned)`` per row (0 for identical directions, 2 for opposite)."""
    return 1 - torch.nn.functional.cosine_similarity(h_base.float(), h_tuned.float(), dim=-1)


def relative_l2(h_base: Float[torch.Tensor, "n d"], h_tuned: Float[torch.Tensor, "n d"]) -> Float[torch.Tensor, " n"]:
    """``||h_tuned - h_base|| / ||h_base||`` per row."""
    hb, ht = h_base.float(), h_tuned.float()
    return (ht - hb).norm(dim=-1) / hb.norm(dim=-1).clamp_min(1e-12)


def layer_shift(store, kind: str = "resid_post") -> list[dict]:
    """Per layer of ``kind`` in a last/index/named-position store: mean 1-cos and relative L2."""
    rows = []
    for site in (s for s in store.sites if s.kind == kind):
        hb, ht = store.get("base", site), store.get("tuned", site)
        rows.append({"layer": site.layer, "one_minus_cos": cosine_shift(hb, ht).mean().item(),
                     "relative_l2": relative_l2(hb, ht).mean().item()})
    return rows
