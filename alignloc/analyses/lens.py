"""Logit lens: read each layer's residual stream through the model's own final norm and unembedding.

For layer ``l``, ``lens_l(h) = log_softmax(unembed(final_norm(h)))``; at the last layer this is the
model's output (the last block's ``resid_post`` is what the final norm reads). Base and tuned are
each read through *their own* norm and unembedding, then compared per layer:
``KL(base || tuned)``, top-1 tokens, and the log-prob of each prompt's target token.
Only per-prompt summaries are kept, so memory stays ``O(batch * d_vocab)`` for any vocabulary.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int

from alignloc.models.families import get_module
from alignloc.models.pair import LoadedModel
from alignloc.models.residency import HeadView
from alignloc.progress import iterate


def _head_logits(model: LoadedModel | HeadView, h: Float[torch.Tensor, "n d_model"]) -> Float[torch.Tensor, "n d_vocab"]:
    norm = get_module(model.model, model.family.final_norm)
    unembed = get_module(model.model, model.family.unembed)
    p = next(unembed.parameters())
    logits = unembed(norm(h.to(device=p.device, dtype=p.dtype))).float()  # on the head's device
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


@torch.no_grad()
def lens_logits(model: LoadedModel | HeadView, h: Float[torch.Tensor, "n d_model"]) -> Float[torch.Tensor, "n d_vocab"]:
    """Float logits (on the CPU) that ``model``'s final norm + unembedding (and soft-capping, if the
    model has it) give for residuals ``h``: the activation-difference lens reads differences with it."""
    return _head_logits(model, h).cpu()


@torch.no_grad()
def lens_logprobs(model: LoadedModel | HeadView, h: Float[torch.Tensor, "n d_model"]) -> Float[torch.Tensor, "n d_vocab"]:
    """Next-token log-probs that ``model``'s final norm + unembedding give for residuals ``h``."""
    return torch.log_softmax(_head_logits(model, h), dim=-1).cpu()


@torch.no_grad()
def lens_compare(
    base: LoadedModel | HeadView,  # a released model's kept head (models.residency.head_only)
    tuned: LoadedModel | HeadView,
    resid_base: Float[torch.Tensor, "layer n d_model"],
    resid_tuned: Float[torch.Tensor, "layer n d_model"],
    target_ids: Int[torch.Tensor, " n"],
    batch_size: int = 64,
) -> dict[str, torch.Tensor]:
    """Per layer and prompt: ``kl`` = KL(base||tuned), ``top1_{base,tuned}``, ``target_lp_{base,tuned}``
    (log-prob of ``target_ids``; NaN where the id is -1), each ``[layer, n]``; and ``target_ids [n]``."""
    n_layers, n = resid_base.shape[:2]
    out = {k: torch.empty(n_layers, n) for k in ("kl", "target_lp_base", "target_lp_tuned")}
    out |= {k: torch.empty(n_layers, n, dtype=torch.long) for k in ("top1_base", "top1_tuned")}
    has_t = target_ids >= 0
    tid = target_ids.clamp_min(0)
    for layer in iterate(range(n_layers), "logit lens (both models)", unit="layer"):
        for s in range(0, n, batch_size):
            sl = slice(s, min(s + batch_size, n))
            lb = lens_logprobs(base, resid_base[layer, sl])  # [b, d_vocab]
            lt = lens_logprobs(tuned, resid_tuned[layer, sl])
            out["kl"][layer, sl] = (lb.exp() * (lb - lt)).sum(-1)
            out["top1_base"][layer, sl], out["top1_tuned"][layer, sl] = lb.argmax(-1), lt.argmax(-1)
            for side, lp in (("base", lb), ("tuned", lt)):
                v = lp.gather(1, tid[sl, None])[:, 0]
                out[f"target_lp_{side}"][layer, sl] = torch.where(has_t[sl], v, torch.nan)
    out["target_ids"] = target_ids.clone()
    return out


def agreement_with_output(top1: Int[torch.Tensor, "layer n"]) -> Float[torch.Tensor, " layer"]:
    """Fraction of prompts whose lens top-1 at each layer equals the model's own final top-1."""
    return (top1 == top1[-1]).float().mean(dim=1)


def first_agreeing_layer(top1: Int[torch.Tensor, "layer n"]) -> Int[torch.Tensor, " n"]:
    """Per prompt, the first layer from which the lens top-1 equals the final top-1 at every later layer."""
    agree = top1 == top1[-1]  # [layer, n]
    # suffix-AND over layers: stays True from the first layer where all later layers agree
    stays = agree.flip(0).cumprod(0).flip(0).bool()
    return stays.float().argmax(dim=0)
