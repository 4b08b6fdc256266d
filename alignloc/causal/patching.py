"""Cross-model activation patching, batched: which layer's activation carries the behavior gap?

Run the *recipient* (default: base) with one site ``kind.L`` replaced by the *donor*'s (tuned)
activation on the same tokens, and score the prompts' targets (teacher-forced log-prob).
``recovered[L] = (M(recipient + patch_L) - M(recipient)) / (M(donor) - M(recipient))`` (means
over prompts); with ``direction="base_into_tuned"`` the same formula tells how much the tuned
model *keeps* (1 - it = what it loses).

All layers of a sweep share one forward per prompt batch: the batch is repeated once per layer
(``[n_layers * b, pos]``) and layer ``L``'s hook patches only its own copy, so a full sweep costs
one Python-level forward per batch, not one per cell.
"""

from __future__ import annotations

from contextlib import ExitStack

import torch

from alignloc.analyses.outputs import gather_target_logprobs, teacher_forced_batch
from alignloc.models.hooks import edit, run_recording
from alignloc.models.pair import ModelPair
from alignloc.prompts import Prompt
from alignloc.sites import Site

DIRECTIONS = ("tuned_into_base", "base_into_tuned")


def _patch_fn(donor_act: torch.Tensor, rows: slice, positions: str, last_ctx: list[int]):
    """Hook body: overwrite ``rows`` of the activation with the donor's (all positions or the last context token)."""

    def fn(act: torch.Tensor) -> torch.Tensor:
        act = act.clone()
        if positions == "all":
            act[rows] = donor_act.to(act.dtype)
        else:
            b = torch.arange(donor_act.shape[0])
            idx = torch.tensor(last_ctx)
            act[rows][b, idx] = donor_act[b, idx].to(act.dtype)  # act[rows] is a view: writes through
        return act

    return fn


@torch.no_grad()
def patch_sweep(
    pair: ModelPair,
    prompts: list[Prompt],
    kind: str = "resid_post",
    layers: list[int] | None = None,
    positions: str = "all",
    direction: str = "tuned_into_base",
    bos: bool = True,
    batch_size: int = 8,
) -> dict:
    """Recovered fraction of the target log-prob gap per layer for ``kind`` patched from donor to recipient.

    ``positions``: ``all`` (every token of text + target) or ``last`` (the last context token,
    the one that predicts the first target token). Returns JSON-ready per-layer lists and the means.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if positions not in ("all", "last"):
        raise ValueError(f"positions must be 'all' or 'last', got {positions!r}")
    recipient, donor = (pair.base, pair.tuned) if direction == "tuned_into_base" else (pair.tuned, pair.base)
    layers = list(range(pair.n_layers)) if layers is None else layers
    sites = [Site(layer, kind) for layer in layers]
    chosen = [p for p in prompts if p.target]
    if not chosen:
        raise ValueError("patching needs prompts with a 'target' to score")
    m_rec, m_don, m_patch = [], [], []
    for s in range(0, len(chosen), batch_size):
        batch = chosen[s : s + batch_size]
        ids, mask, ctx_lens, tgt = teacher_forced_batch(pair.tokenizer, batch, bos, recipient.max_len)
        b = ids.shape[0]
        donor_acts = run_recording(donor.model, donor.family, sites, ids, mask, stop=False)
        m_don.append(gather_target_logprobs(donor.model(input_ids=ids, attention_mask=mask).logits, ctx_lens, tgt))
        m_rec.append(gather_target_logprobs(recipient.model(input_ids=ids, attention_mask=mask).logits, ctx_lens, tgt))
        big_ids, big_mask = ids.repeat(len(sites), 1), mask.repeat(len(sites), 1)  # [n_layers * b, pos]
        last = [n - 1 for n in ctx_lens]
        with ExitStack() as stack:
            for i, site in enumerate(sites):
                fn = _patch_fn(donor_acts[site], slice(i * b, (i + 1) * b), positions, last)
                stack.enter_context(edit(recipient.model, recipient.family, site, fn))
            logits = recipient.model(input_ids=big_ids, attention_mask=big_mask).logits
        m_patch.append(gather_target_logprobs(logits, ctx_lens * len(sites), tgt * len(sites)).view(len(sites), b))
    rec, don, patched = torch.cat(m_rec), torch.cat(m_don), torch.cat(m_patch, dim=1)  # [n], [n], [layer, n]
    gap = float(don.mean() - rec.mean())
    means = patched.mean(dim=1)
    return {
        "kind": kind, "positions": positions, "direction": direction, "layers": layers, "n": len(chosen),
        "recipient": float(rec.mean()), "donor": float(don.mean()), "gap": gap,
        "patched": means.tolist(),
        "recovered": ((means - rec.mean()) / gap).tolist() if gap else [float("nan")] * len(layers),
    }


def attribution_sweep(
    pair: ModelPair,
    prompts: list[Prompt],
    kind: str = "resid_post",
    layers: list[int] | None = None,
    direction: str = "tuned_into_base",
    bos: bool = True,
    batch_size: int = 8,
) -> dict:
    """Attribution patching (first-order estimate of ``patch_sweep`` with ``positions="all"``).

    ``M(recipient + patch_L) - M(recipient) ~ sum_pos (a_donor - a_recipient) . dM/da_recipient``:
    one forward and one backward of the recipient per batch give every layer (and position) at
    once. Returns ``recovered`` per layer like ``patch_sweep`` and ``by_position [layer][pos]``
    (mean over prompts, positions right-padded with zeros).
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    recipient, donor = (pair.base, pair.tuned) if direction == "tuned_into_base" else (pair.tuned, pair.base)
    layers = list(range(pair.n_layers)) if layers is None else layers
    sites = [Site(layer, kind) for layer in layers]
    chosen = [p for p in prompts if p.target]
    if not chosen:
        raise ValueError("attribution patching needs prompts with a 'target' to score")
    est, m_rec, m_don, by_pos = [], [], [], []
    for s in range(0, len(chosen), batch_size):
        batch = chosen[s : s + batch_size]
        ids, mask, ctx_lens, tgt = teacher_forced_batch(pair.tokenizer, batch, bos, recipient.max_len)
        with torch.no_grad():
            donor_acts = run_recording(donor.model, donor.family, sites, ids, mask, stop=False)
            m_don.append(gather_target_logprobs(donor.model(input_ids=ids, attention_mask=mask).logits, ctx_lens, tgt))
        seen: dict[Site, torch.Tensor] = {}
        with ExitStack() as stack, torch.enable_grad():
            for site in sites:
                def keep(act, site=site, seen=seen):
                    act.retain_grad()
                    seen[site] = act
                stack.enter_context(edit(recipient.model, recipient.family, site, keep))
            metric = gather_target_logprobs(recipient.model(input_ids=ids, attention_mask=mask).logits, ctx_lens, tgt)
            metric.sum().backward()
        recipient.model.zero_grad(set_to_none=True)
        m_rec.append(metric.detach())
        cells = torch.stack([((donor_acts[site] - seen[site].detach()) * seen[site].grad).sum(-1) * mask
                             for site in sites])  # [layer, b, pos]
        est.append(cells.sum(-1))  # [layer, b]
        by_pos.append(cells)
    rec, don, total = torch.cat(m_rec), torch.cat(m_don), torch.cat(est, dim=1)
    gap = float(don.mean() - rec.mean())
    width = max(c.shape[-1] for c in by_pos)
    pos = torch.cat([torch.nn.functional.pad(c, (0, width - c.shape[-1])) for c in by_pos], dim=1).mean(1)
    return {
        "kind": kind, "direction": direction, "layers": layers, "n": len(chosen), "gap": gap,
        "estimated_delta": total.mean(1).tolist(),
        "recovered": (total.mean(1) / gap).tolist() if gap else [float("nan")] * len(layers),
        "by_position": pos.tolist(),
    }
