"""Directions in activation space and the pure tensor operations on them.

- ``diff_in_means``: mean of group A minus mean of group B (the classic steering vector);
- ``probe_direction``: the weight vector of a logistic-regression probe separating two groups;
- ``project_out``: remove the component along a direction (directional ablation);
- ``orthogonalize_rows`` / ``orthogonalize_cols``: the same on a weight matrix that writes into
  (rows of ``[d_model, d_in]``) or is read out along (``[d_in, d_model]``) the residual stream.
"""

from __future__ import annotations

import torch
from jaxtyping import Float


def unit(v: Float[torch.Tensor, " d"]) -> Float[torch.Tensor, " d"]:
    """``v / ||v||``; raises on a zero vector (no direction to use)."""
    n = v.float().norm()
    if n == 0:
        raise ValueError("the direction is the zero vector (the two groups have the same mean?)")
    return v / n


def diff_in_means(a: Float[torch.Tensor, "n_a d"], b: Float[torch.Tensor, "n_b d"]) -> Float[torch.Tensor, " d"]:
    """``mean(a) - mean(b)`` over the first axis (unnormalised: its norm is the groups' separation)."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected [n, d] activations of equal width, got {tuple(a.shape)} and {tuple(b.shape)}")
    if len(a) == 0 or len(b) == 0:
        raise ValueError("each group needs at least one activation")
    return a.float().mean(0) - b.float().mean(0)


def probe_direction(a: Float[torch.Tensor, "n_a d"], b: Float[torch.Tensor, "n_b d"], c: float = 1.0) -> Float[torch.Tensor, " d"]:
    """Unit weight vector of an L2 logistic-regression probe for "in group a" vs "in group b"."""
    from sklearn.linear_model import LogisticRegression

    x = torch.cat([a, b]).float()
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
    y = [1] * len(a) + [0] * len(b)
    w = LogisticRegression(C=c, max_iter=2000).fit(((x - mu) / sd).numpy(), y).coef_[0]
    return unit(torch.tensor(w, dtype=torch.float32) / sd)  # back to raw coordinates


def project_out(x: Float[torch.Tensor, "... d"], v: Float[torch.Tensor, " d"]) -> Float[torch.Tensor, "... d"]:
    """``x - (x . v_hat) v_hat``: ``x`` with no component along ``v``."""
    u = unit(v).to(x.dtype)
    return x - (x @ u)[..., None] * u


def orthogonalize_rows(w: Float[torch.Tensor, "d_model d_in"], v: Float[torch.Tensor, " d_model"]) -> Float[torch.Tensor, "d_model d_in"]:
    """``(I - v_hat v_hat^T) W`` for a weight whose *output* axis is the residual stream (nn.Linear)."""
    u = unit(v).to(w.dtype)
    return w - u[:, None] * (u @ w)[None, :]


def orthogonalize_cols(w: Float[torch.Tensor, "d_in d_model"], v: Float[torch.Tensor, " d_model"]) -> Float[torch.Tensor, "d_in d_model"]:
    """``W (I - v_hat v_hat^T)`` for a weight stored ``[d_in, d_model]`` (GPT-2 Conv1D, embeddings)."""
    u = unit(v).to(w.dtype)
    return w - (w @ u)[:, None] * u[None, :]
