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
from alignloc.progress import iterate
from alignloc.prompts import Prompt
from alignloc.sites import Site


def _attribute(recipient: LoadedModel, donor: LoadedModel, tokenizer, prompts: list[Prompt], kinds: dict[str, int | None],
               layers: list[int], metric: str, bos: bool, batch_size: int, corrupt: bool) -> dict[str, dict]:
    """Shared body, per site kind (``kinds``: kind -> its grid's ``window``): the per-layer estimate (all positions)
    and the ``[layer][offset]`` grid. Every kind's sites are read off the same forward and backward per batch (the
    gradient at a site does not depend on which other sites are watched)."""
    chosen = [p for p in prompts if p.target]
    if not chosen:
        raise ValueError("attribution patching needs prompts with a 'target' to score")
    metric = resolve_metric(metric, chosen)
    sites = {kind: [Site(layer, kind) for layer in layers] for kind in kinds}
    every = [site for kind in kinds for site in sites[kind]]
    offsets = {kind: context_offsets(tokenizer, chosen, bos, recipient.max_len, window) for kind, window in kinds.items()}
    est, by_offset, m_rec, m_don = {k: [] for k in kinds}, {k: [] for k in kinds}, [], []
    label = f"attribution {', '.join(kinds)} ({'within ' + recipient.ref if corrupt else recipient.ref + ' <- ' + donor.ref})"
    for s in iterate(range(0, len(chosen), batch_size), label, unit="batch"):
        part = chosen[s : s + batch_size]
        clean = scored_batch(tokenizer, part, bos, recipient.max_len)
        ids = scored_batch(tokenizer, part, bos, recipient.max_len, "corrupt_text", like=clean).ids if corrupt else clean.ids
        with torch.no_grad():
            donor_logits, donor_acts = forward_recording(donor, clean, every)
        ref = torch.log_softmax(donor_logits.float(), -1) if metric == "kl" else None
        m_don.append(score(donor_logits, clean, metric, ref))
        seen: dict[Site, torch.Tensor] = {}
        with ExitStack() as stack, torch.enable_grad():
            for site in every:
                def keep(act, site=site, seen=seen):
                    act.retain_grad()
                    seen[site] = act
                stack.enter_context(edit(recipient.model, recipient.family, site, keep))
            m = score(scored_logits(recipient, clean, ids), clean, metric, ref)
            m.sum().backward()
        recipient.model.zero_grad(set_to_none=True)
        m_rec.append(m.detach())
        rows = torch.arange(len(part))
        for kind in kinds:
            cells = torch.stack([((donor_acts[site].to(seen[site].device) - seen[site].detach()) * seen[site].grad).sum(-1).cpu()
                                 * clean.mask for site in sites[kind]])  # [layer, b, pos]
            est[kind].append(cells.sum(-1))
            by_offset[kind].append(torch.stack([cells[:, rows, clean.last + o] for o in offsets[kind]], -1))  # [layer, b, offset]
    rec, don = torch.cat(m_rec), torch.cat(m_don)
    gap = float(don.mean() - rec.mean())
    nan = float("nan")
    out = {}
    for kind in kinds:
        total, grid = torch.cat(est[kind], dim=1).mean(1), torch.cat(by_offset[kind], dim=1).mean(1)
        out[kind] = {"kind": kind, "metric": metric, "layers": layers, "n": len(chosen), "gap": gap,
                     "recipient": float(rec.mean()), "donor": float(don.mean()),
                     "estimated_delta": total.tolist(),
                     "recovered": (total / gap).tolist() if gap else [nan] * len(layers),
                     "offsets": offsets[kind],
                     "by_position": (grid / gap).tolist() if gap else [[nan] * len(offsets[kind])] * len(layers)}
    return out


def attribution_sweep(pair: ModelPair, prompts: list[Prompt], kind: str = "resid_post", layers: list[int] | None = None,
                      direction: str = "tuned_into_base", metric: str = "logprob", bos: bool = True,
                      batch_size: int = 8, window: int | None = None) -> dict:
    """Cross-model attribution patching: estimates of ``patch_sweep`` per layer and per (layer, offset).

    ``recovered[L]`` estimates ``patch_sweep(..., positions="all")``; ``by_position[L][j]``
    estimates ``positions="each"`` at ``offsets[j]`` (as fractions of the gap).
    """
    return attribution_sweeps(pair, prompts, {kind: window}, layers, direction, metric, bos, batch_size)[kind]


def attribution_sweeps(pair: ModelPair, prompts: list[Prompt], kinds: dict[str, int | None], layers: list[int] | None = None,
                       direction: str = "tuned_into_base", metric: str = "logprob", bos: bool = True,
                       batch_size: int = 8) -> dict[str, dict]:
    """``attribution_sweep`` of several site kinds at once (``kinds``: kind -> its grid's ``window``), each the
    same result as alone, from one forward and backward of the recipient and one forward of the donor per batch."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    recipient, donor = (pair.base, pair.tuned) if direction == "tuned_into_base" else (pair.tuned, pair.base)
    layers = list(range(pair.n_layers)) if layers is None else layers
    out = _attribute(recipient, donor, pair.tokenizer, prompts, kinds, layers, metric, bos, batch_size, False)
    return {kind: {"setting": "cross_model", "direction": direction, **r} for kind, r in out.items()}


def within_attribution_sweep(pair: ModelPair, prompts: list[Prompt], side: str = "base", kind: str = "resid_post",
                             layers: list[int] | None = None, metric: str = "auto", bos: bool = True,
                             batch_size: int = 8, window: int | None = None) -> dict:
    """Within-model attribution patching (clean into ``corrupt_text``): estimates of ``within_sweep``."""
    if side not in ("base", "tuned"):
        raise ValueError(f"side must be 'base' or 'tuned', got {side!r}")
    model = pair.base if side == "base" else pair.tuned
    layers = list(range(pair.n_layers)) if layers is None else layers
    out = _attribute(model, model, pair.tokenizer, prompts, {kind: window}, layers, metric, bos, batch_size, True)[kind]
    return {"setting": "within_model", "side": side, **out}
