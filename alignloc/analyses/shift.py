"""Representation shift between base and tuned activations at one site.

``1 - cos`` and relative L2 per prompt (mean over prompts per layer), from stored activations,
and linear CKA (Kornblith et al. 2019), a dataset-level similarity that ignores rotations and
isotropic scaling: 1 - CKA is large only when the *geometry* of the prompts' representations changed.
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


def centered_gram(h: Float[torch.Tensor, "n d"]) -> Float[torch.Tensor, "n n"]:
    """Gram matrix of the column-centred rows, in float64."""
    x = h.double() - h.double().mean(dim=0, keepdim=True)
    return x @ x.T


def linear_cka(h_base: Float[torch.Tensor, "n d"], h_tuned: Float[torch.Tensor, "n d"]) -> float:
    """Linear CKA between two representations of the same ``n`` prompts (1 = same geometry).

    Uses the feature form ``||Yc^T Xc||^2 / (||Xc^T Xc|| ||Yc^T Yc||)``, which costs ``n d^2``;
    for ``d > n`` prefer ``cka_from_grams`` on ``centered_gram`` (``n^2 d`` once, then ``n^2``).
    """
    x = h_base.double() - h_base.double().mean(0, keepdim=True)
    y = h_tuned.double() - h_tuned.double().mean(0, keepdim=True)
    denom = ((x.T @ x).norm() * (y.T @ y).norm()).item()
    return float((y.T @ x).norm().pow(2).item() / denom) if denom > 0 else 1.0


def cka_from_grams(k: Float[torch.Tensor, "n n"], l: Float[torch.Tensor, "n n"]) -> float:  # noqa: E741
    """Linear CKA from two Gram matrices (re-centred here, so rows may be a bootstrap resample)."""
    kc = k - k.mean(0, keepdim=True) - k.mean(1, keepdim=True) + k.mean()  # H K H, in O(n^2)
    lc = l - l.mean(0, keepdim=True) - l.mean(1, keepdim=True) + l.mean()
    denom = (kc.norm() * lc.norm()).item()
    return float((kc * lc).sum().item() / denom) if denom > 0 else 1.0


def layer_shift(store, kind: str = "resid_post") -> list[dict]:
    """Per layer of ``kind`` in a last/index/named-position store: mean 1-cos and relative L2."""
    rows = []
    for site in (s for s in store.sites if s.kind == kind):
        hb, ht = store.get("base", site), store.get("tuned", site)
        rows.append({"layer": site.layer, "one_minus_cos": cosine_shift(hb, ht).mean().item(),
                     "relative_l2": relative_l2(hb, ht).mean().item()})
    return rows
