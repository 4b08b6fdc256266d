"""Attribution patching: a first-order estimate of a whole patching sweep from one backward pass.

``M(recipient + patch_{L,pos}) - M(recipient) ~ (a_donor - a_recipient)[L, pos] . dM/da_recipient[L, pos]``:
one forward and one backward of the recipient per prompt batch give every layer and position at
once (Nanda 2023; Syed et al. 2023). Use it to rank cells in big sweeps, and exact patching
(``alignloc.causal.patching``) to measure the ones that matter: the estimate is linear, so it
overshoots where an effect saturates.
"""

from __future__ import annotations

from contextlib import ExitStack

import torch

from alignloc.causal.metrics import resolve_metric, score, scored_batch, scored_logits
from alignloc.causal.patching import DIRECTIONS, context_offsets, forward_recording
from alignloc.models.hooks import edit
from alignloc.models.pair import LoadedModel, ModelPair
from alignloc.prompts import Prompt
from alignloc.sites import Site


def _attribute(recipient: LoadedModel, donor: LoadedModel, tokenizer, prompts: list[Prompt], kind: str,
               layers: list[int], metric: str, bos: bool, batch_size: int, corrupt: bool,
               window: int | None) -> dict:
    """Shared body: per-layer estimate (all positions) and the ``[layer][offset]`` grid."""
    chosen = [p for p in prompts if p.target]
    if not chosen:
        raise ValueError("attribution patching needs prompts with a 'target' to score")
    metric = resolve_metric(metric, chosen)
    sites = [Site(layer, kind) for layer in layers]
    offsets = context_offsets(tokenizer, chosen, bos, recipient.max_len, window)
    est, by_offset, m_rec, m_don = [], [], [], []
    for s in range(0, len(chosen), batch_size):
        part = chosen[s : s + batch_size]
        clean = scored_batch(tokenizer, part, bos, recipient.max_len)
        ids = scored_batch(tokenizer, part, bos, recipient.max_len, "corrupt_text", like=clean).ids if corrupt else clean.ids
        with torch.no_grad():
            donor_logits, donor_acts = forward_recording(donor, clean, sites)
        ref = torch.log_softmax(donor_logits.float(), -1) if metric == "kl" else None
        m_don.append(score(donor_logits, clean, metric, ref))
        seen: dict[Site, torch.Tensor] = {}
        with ExitStack() as stack, torch.enable_grad():
            for site in sites:
                def keep(act, site=site, seen=seen):
                    act.retain_grad()
                    seen[site] = act
                stack.enter_context(edit(recipient.model, recipient.family, site, keep))
            m = score(scored_logits(recipient, clean, ids), clean, metric, ref)
            m.sum().backward()
        recipient.model.zero_grad(set_to_none=True)
        m_rec.append(m.detach())
        cells = torch.stack([((donor_acts[site].to(seen[site].device) - seen[site].detach()) * seen[site].grad).sum(-1).cpu()
                             * clean.mask for site in sites])  # [layer, b, pos]
        est.append(cells.sum(-1))
        rows = torch.arange(len(part))
        by_offset.append(torch.stack([cells[:, rows, clean.last + o] for o in offsets], -1))  # [layer, b, offset]
    rec, don = torch.cat(m_rec), torch.cat(m_don)
    total, grid = torch.cat(est, dim=1).mean(1), torch.cat(by_offset, dim=1).mean(1)
    gap = float(don.mean() - rec.mean())
    nan = float("nan")
    return {"kind": kind, "metric": metric, "layers": layers, "n": len(chosen), "gap": gap,
            "recipient": float(rec.mean()), "donor": float(don.mean()),
            "estimated_delta": total.tolist(),
            "recovered": (total / gap).tolist() if gap else [nan] * len(layers),
            "offsets": offsets, "by_position": (grid / gap).tolist() if gap else [[nan] * len(offsets)] * len(layers)}


def attribution_sweep(pair: ModelPair, prompts: list[Prompt], kind: str = "resid_post", layers: list[int] | None = None,
                      direction: str = "tuned_into_base", metric: str = "logprob", bos: bool = True,
                      batch_size: int = 8, window: int | None = None) -> dict:
    """Cross-model attribution patching: estimates of ``patch_sweep`` per layer and per (layer, offset).

    ``recovered[L]`` estimates ``patch_sweep(..., positions="all")``; ``by_position[L][j]``
    estimates ``positions="each"`` at ``offsets[j]`` (as fractions of the gap).
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    recipient, donor = (pair.base, pair.tuned) if direction == "tuned_into_base" else (pair.tuned, pair.base)
    layers = list(range(pair.n_layers)) if layers is None else layers
    out = _attribute(recipient, donor, pair.tokenizer, prompts, kind, layers, metric, bos, batch_size, False, window)
    return {"setting": "cross_model", "direction": direction, **out}


def within_attribution_sweep(pair: ModelPair, prompts: list[Prompt], side: str = "base", kind: str = "resid_post",
                             layers: list[int] | None = None, metric: str = "auto", bos: bool = True,
                             batch_size: int = 8, window: int | None = None) -> dict:
    """Within-model attribution patching (clean into ``corrupt_text``): estimates of ``within_sweep``."""
    if side not in ("base", "tuned"):
        raise ValueError(f"side must be 'base' or 'tuned', got {side!r}")
    model = pair.base if side == "base" else pair.tuned
    layers = list(range(pair.n_layers)) if layers is None else layers
    out = _attribute(model, model, pair.tokenizer, prompts, kind, layers, metric, bos, batch_size, True, window)
    return {"setting": "within_model", "side": side, **out}
