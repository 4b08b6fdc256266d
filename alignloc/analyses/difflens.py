"""What changed, discovered rather than declared: the activation-difference lens.

Minder et al. ("Narrow finetuning leaves clearly readable traces in activation differences")
observe that the mean tuned-minus-base residual difference, even on the first few tokens of
unrelated text, reads through the unembedding as the fine-tuning's topic. That lets a report
*name* what a post-training changed without any prompt written for it: the other measures of
layer-diff score targets someone declared, this one lists the tokens the difference points at.

Everything here is pure tensor work on what the collection gathered (``layerdiff.whatchanged``):

- ``read_differences``: each layer's mean difference ``[layer, d_model]`` through a readout (the
  tuned model's final norm + unembedding, ``analyses.lens.lens_logits``), minus the readout of
  zero. The final norm rescales its input, so a difference of any size reads at full scale, and a
  LayerNorm's bias (or an unembedding bias) would read as the same "promoted" tokens at every
  layer; subtracting ``readout(0)`` removes the affine part, so a zero difference reads as zero.
- ``diff_lens``: per layer the top promoted and demoted tokens, the difference's norm, and a
  heatmap table (layer x tokens). Layers whose difference is below ``rel_tol`` times the base's
  residual norm are *unchanged*: reading rounding noise through a norm would make up tokens.
- ``token_kl`` / ``kl_profile``: KL(tuned || base) of the next-token distributions along the tuned
  model's teacher-forced answers: which answer positions, and which answer tokens, carry the change.
- ``output_shift``: the mean change of each token's output probability over those positions.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Bool, Float, Int

Readout = Callable[[Float[torch.Tensor, "n d_model"]], Float[torch.Tensor, "n d_vocab"]]
Decode = Callable[[int], str]
REL_TOL = 1e-5  # float32 rounding of residual norms, with room for the sums over tokens
HEAT_PER_LAYER, HEAT_MAX = 3, 24  # heatmap columns: the top 3 promoted tokens of each layer, at most 24 in all


def read_differences(diff: Float[torch.Tensor, "layer d_model"], readout: Readout) -> Float[torch.Tensor, "layer d_vocab"]:
    """``readout(diff) - readout(0)`` per layer: logits of each layer's difference, affine part removed."""
    zero = readout(torch.zeros_like(diff[:1]))  # [1, d_vocab]: norm bias, unembedding bias
    return readout(diff) - zero


def active_layers(diff: Float[torch.Tensor, "layer d_model"], ref_norm: Float[torch.Tensor, " layer"],
                  rel_tol: float = REL_TOL) -> Bool[torch.Tensor, " layer"]:
    """Layers whose mean difference is above ``rel_tol`` x the base's mean residual norm."""
    return diff.double().norm(dim=-1) > rel_tol * ref_norm.double().clamp_min(1e-30)


def top_tokens(logits: Float[torch.Tensor, "layer d_vocab"], k: int) -> dict[str, torch.Tensor]:
    """``promoted_{ids,logits}`` (largest first) and ``demoted_{ids,logits}`` (most negative first), each ``[layer, k]``."""
    k = min(k, logits.shape[-1])
    up = logits.topk(k, dim=-1)
    down = logits.topk(k, dim=-1, largest=False)
    return {"promoted_ids": up.indices, "promoted_logits": up.values,
            "demoted_ids": down.indices, "demoted_logits": down.values}


def _entries(ids: Int[torch.Tensor, " k"], vals: Float[torch.Tensor, " k"], decode: Decode) -> list[dict]:
    return [{"id": int(i), "token": decode(int(i)), "logit": float(v)} for i, v in zip(ids, vals, strict=True)]


def heatmap(logits: Float[torch.Tensor, "layer d_vocab"], active: Bool[torch.Tensor, " layer"], decode: Decode,
            per_layer: int = HEAT_PER_LAYER, max_tokens: int = HEAT_MAX) -> dict:
    """Columns = the top ``per_layer`` promoted tokens of each changed layer (from the last layer down,
    so the output's tokens come first), at most ``max_tokens``; ``logits[layer][col]`` (None where unchanged)."""
    ids: list[int] = []
    for layer in reversed(range(logits.shape[0])):
        if active[layer]:
            for i in logits[layer].topk(min(per_layer, logits.shape[-1])).indices.tolist():
                if i not in ids and len(ids) < max_tokens:
                    ids.append(i)
    z = [[float(logits[layer, i]) for i in ids] if active[layer] else [None] * len(ids) for layer in range(logits.shape[0])]
    return {"ids": ids, "tokens": [decode(i) for i in ids], "logits": z}


def diff_lens(diff: Float[torch.Tensor, "layer d_model"], ref_norm: Float[torch.Tensor, " layer"], readout: Readout,
              decode: Decode, k: int = 10, rel_tol: float = REL_TOL) -> dict:
    """The JSON-ready reading of one set of mean differences: per layer ``norm``, ``relative_norm``
    (to the base's mean residual norm), ``changed`` and the top ``k`` promoted / demoted tokens
    (empty where unchanged); and the ``heatmap`` table."""
    active = active_layers(diff, ref_norm, rel_tol)
    logits = read_differences(diff.float(), readout)  # [layer, d_vocab]
    top = top_tokens(logits, k)
    norm = diff.double().norm(dim=-1)
    layers = []
    for layer in range(diff.shape[0]):
        on = bool(active[layer])
        layers.append({
            "layer": layer, "changed": on,
            "promoted": _entries(top["promoted_ids"][layer], top["promoted_logits"][layer], decode) if on else [],
            "demoted": _entries(top["demoted_ids"][layer], top["demoted_logits"][layer], decode) if on else [],
        })
    return {"norm": norm.tolist(), "relative_norm": (norm / ref_norm.double().clamp_min(1e-30)).tolist(),
            "layers": layers, "heatmap": heatmap(logits, active, decode)}


def token_kl(logp_p: Float[torch.Tensor, "*batch d_vocab"], logp_q: Float[torch.Tensor, "*batch d_vocab"]) -> Float[torch.Tensor, " *batch"]:
    """``KL(p || q)`` per row from log-probs (clamped at 0 against rounding)."""
    return (logp_p.exp() * (logp_p - logp_q)).sum(-1).clamp_min(0.0)


def kl_profile(kl: Float[torch.Tensor, "n k"], answer_ids: Int[torch.Tensor, "n k"], decode: Decode, top: int = 10) -> dict:
    """Where along the answers the distributions part. ``kl[i, j]`` is KL(tuned || base) of the
    distribution that predicts answer token ``j`` of prompt ``i`` (``answer_ids[i, j]``, -1 past the
    answer's end). Per position index: the mean and the count; per answer token: the mean KL where
    it is the token being predicted (``top`` tokens by mean, then by count)."""
    valid = answer_ids >= 0  # [n, k]
    n_pos = valid.sum(0)  # [k]
    mean_pos = torch.where(n_pos > 0, (kl * valid).sum(0) / n_pos.clamp_min(1), torch.nan)
    vals, ids = kl[valid].double(), answer_ids[valid]
    uniq, inv = torch.unique(ids, return_inverse=True)
    total = torch.zeros(len(uniq), dtype=torch.float64).scatter_add_(0, inv, vals)
    count = torch.zeros(len(uniq), dtype=torch.float64).scatter_add_(0, inv, torch.ones_like(vals))
    mean = total / count.clamp_min(1)
    order = sorted(range(len(uniq)), key=lambda i: (-float(mean[i]), -float(count[i]), int(uniq[i])))[:top]
    return {
        "n_answers": int(valid.any(1).sum()), "n_positions": int(valid.sum()),
        "mean": float(vals.mean()) if len(vals) else None,
        "mean_by_position": mean_pos.tolist(), "n_by_position": n_pos.tolist(),
        "peak_position": int(torch.nan_to_num(mean_pos, nan=-1.0).argmax()) if len(vals) else None,
        "top_tokens": [{"id": int(uniq[i]), "token": decode(int(uniq[i])), "mean_kl": float(mean[i]), "n": int(count[i])}
                       for i in order],
    }


def output_shift(prob_delta_sum: Float[torch.Tensor, " d_vocab"], n_positions: int, decode: Decode, k: int = 10) -> dict:
    """Top ``k`` tokens whose output probability the tuned model raised / lowered most, on average
    over the answer positions (``prob_delta_sum`` = sum over them of ``p_tuned - p_base``)."""
    mean = prob_delta_sum.double() / max(n_positions, 1)
    top = top_tokens(mean[None], k)
    return {side: [{"id": int(i), "token": decode(int(i)), "delta_p": float(v)}
                   for i, v in zip(top[f"{side}_ids"][0], top[f"{side}_logits"][0], strict=True)]
            for side in ("promoted", "demoted")}
