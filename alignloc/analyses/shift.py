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


def linear_cka(h_base: Float[torch.Tensor, "n d"], h_tuned: Float[torch.Tensor, "n d"]) -> float:
    """Linear CKA between two representations of the same ``n`` prompts (1 = same geometry).

    Uses the feature form ``||Yc^T Xc||^2 / (||Xc^T Xc|| ||Yc^T Yc||)``, which costs ``n d^2``;
    ``cka_bootstrap`` gives it on many resamples of the prompts at once.
    """
    x = h_base.double() - h_base.double().mean(0, keepdim=True)
    y = h_tuned.double() - h_tuned.double().mean(0, keepdim=True)
    denom = ((x.T @ x).norm() * (y.T @ y).norm()).item()
    return float((y.T @ x).norm().pow(2).item() / denom) if denom > 0 else 1.0


GRAM_MAX_N = 4096  # above it, the n x n Gram matrices of cka_bootstrap would take too much memory


def _weighted_hsic(k: Float[torch.Tensor, "n n"], l: Float[torch.Tensor, "n n"],  # noqa: E741
                   w: Float[torch.Tensor, "boot n"]) -> Float[torch.Tensor, " boot"]:
    """``sum_ab w_a w_b Kc_ab Lc_ab`` per row of weights, ``Kc``/``Lc`` centred with the weighted means.

    A bootstrap resample is the multiset of prompts with multiplicities ``w``; its centred Gram
    entries are ``K_ab - m_a - m_b + mu`` (``m = K w / N``, ``mu = w K w / N^2``), and since ``Kc`` sums to
    zero against ``w`` along both axes, the sum equals
    ``w (K o L) w - 2/N sum_a w_a (Kw)_a (Lw)_a + (w K w)(w L w) / N^2``: O(n^2) per resample.
    """
    n_total = w.sum(1)  # [boot]
    kw, lw = w @ k, w @ l  # [boot, n]
    return ((w @ (k * l)) * w).sum(1) - 2 / n_total * (w * kw * lw).sum(1) + (kw * w).sum(1) * (lw * w).sum(1) / n_total**2


def cka_bootstrap(h_base: Float[torch.Tensor, "n d"], h_tuned: Float[torch.Tensor, "n d"],
                  idx: torch.Tensor) -> Float[torch.Tensor, " boot"]:
    """Linear CKA of each bootstrap resample ``idx [boot, n]`` of the prompts (``linear_cka(h_base[i],
    h_tuned[i])`` for each row ``i``), from the two Gram matrices and the resamples' multiplicities:
    ``O(n^2 d)`` once and ``O(n^2)`` per resample, instead of ``O(n d^2)`` per resample."""
    n = h_base.shape[0]
    # a resample's centring removes any constant shift: taking out the full mean first keeps the
    # expansion in _weighted_hsic from cancelling large numbers (residual streams have large means)
    x, y = (h.double() - h.double().mean(0, keepdim=True) for h in (h_base, h_tuned))
    k, l = x @ x.T, y @ y.T  # noqa: E741
    w = torch.zeros(idx.shape[0], n, dtype=torch.float64).scatter_add_(1, idx, torch.ones(idx.shape, dtype=torch.float64))
    num = _weighted_hsic(k, l, w)
    denom = (_weighted_hsic(k, k, w) * _weighted_hsic(l, l, w)).clamp_min(0).sqrt()
    return torch.where(denom > 0, num / denom.clamp_min(1e-300), torch.ones_like(num))


def layer_shift(store, kind: str = "resid_post") -> list[dict]:
    """Per layer of ``kind`` in a last/index/named-position store: mean 1-cos and relative L2."""
    rows = []
    for site in (s for s in store.sites if s.kind == kind):
        hb, ht = store.get("base", site), store.get("tuned", site)
        rows.append({"layer": site.layer, "one_minus_cos": cosine_shift(hb, ht).mean().item(),
                     "relative_l2": relative_l2(hb, ht).mean().item()})
    return rows
