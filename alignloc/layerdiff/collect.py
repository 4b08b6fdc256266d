"""Everything layer-diff reads from the models, gathered once: activations (through the store),
lens summaries, target log-probs and weights. The only part of layer-diff that runs models."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from alignloc.analyses.lens import lens_compare
from alignloc.analyses.outputs import answer_tokens, first_target_ids, target_logprobs
from alignloc.analyses.weights import weight_diff
from alignloc.capturing import capture
from alignloc.models.pair import SIDES, ModelPair
from alignloc.prompts import Prompt
from alignloc.store import Store

SITE_KINDS = ("resid_post", "attn_out", "mlp_out")


@dataclass
class PairData:
    """Raw per-prompt material for one pair; every tensor is indexed like ``prompts``."""

    prompts: list[Prompt]
    acts: dict[str, dict[str, torch.Tensor]]  # acts[side][kind] -> [layer, n, d_model] at the last token (resid_pre: layer 0 only)
    lens: dict[str, torch.Tensor]  # see lens_compare: [layer, n] each
    target_lp: dict[str, torch.Tensor]  # [n] per side (NaN without a target)
    answer_tokens: torch.Tensor  # [n]: a score's per-answer factor (outputs.answer_tokens)
    weights: dict  # weight_diff(...)
    store: Store


def stacked(store: Store, side: str, kind: str) -> torch.Tensor:
    """``[layer, n, d_model]`` of one site kind, all captured layers in order."""
    layers = sorted(s.layer for s in store.sites if s.kind == kind)
    return torch.stack([store.get(side, kind, layer=layer).float() for layer in layers])


def collect(
    pair: ModelPair,
    prompts: list[Prompt],
    store_dir: str | Path,
    batch_size: int = 16,
    backend: str = "hf",
    overwrite: bool = False,
    one_at_a_time: bool = False,
    reuse_base: PairData | None = None,
) -> PairData:
    """Capture (or reuse) last-token sites of both models into ``store_dir`` and compute the rest.

    ``one_at_a_time``: hold one model in memory at a time (each is released after its turn and its
    final norm + unembedding kept for the lens; the released side's weights are read one tensor at
    a time from its checkpoint files for the weight diff). The last model used stays loaded.

    ``reuse_base``: another pair's data with the same base model on the same prompts (a control pair shares
    the base): its base activations and target log-probs are taken, not computed again.
    """
    from alignloc.models.residency import CheckpointWeights, StreamingUnavailable, head_only

    # resid_pre.0 (the embeddings) is the baseline of layer 0's increment
    store = capture(pair, prompts, store_dir, sites=",".join(("resid_pre.0", *SITE_KINDS)), positions="last",
                    batch_size=batch_size, backend=backend, overwrite=overwrite, release=one_at_a_time,
                    reuse={"base": reuse_base.store.root} if reuse_base is not None else None)
    acts = {side: {k: stacked(store, side, k) for k in ("resid_pre", *SITE_KINDS)} for side in SIDES}
    bos = bool(store.manifest["bos"])
    tids = first_target_ids(pair.tokenizer, prompts)
    per_answer = answer_tokens(pair.tokenizer, prompts)
    order = sorted(SIDES, key=lambda side: not pair.side(side).resident)  # a model in memory goes first
    target_lp, heads, weights_of = {}, {}, {}
    for k, side in enumerate(order):
        lm = pair.side(side)
        reused = side == "base" and reuse_base is not None
        target_lp[side] = reuse_base.target_lp["base"] if reused else target_logprobs(lm, prompts, bos, batch_size)
        heads[side] = lm
        weights_of[side] = lm.model.state_dict()
        if one_at_a_time and k < len(order) - 1:
            heads[side] = head_only(lm)
            try:
                weights_of[side] = CheckpointWeights(lm)
            except StreamingUnavailable:  # read again after the other side (two models' weights for the diff)
                weights_of[side] = None
            lm.release()
    lens = lens_compare(heads["base"], heads["tuned"], acts["base"]["resid_post"], acts["tuned"]["resid_post"], tids)
    del heads  # the copied heads of released models, no longer needed
    weights_of = {side: w if w is not None else pair.side(side).model.state_dict() for side, w in weights_of.items()}
    weights = weight_diff(weights_of["base"], weights_of["tuned"], pair.base.family, pair.n_layers)
    return PairData(prompts=prompts, acts=acts, lens=lens, target_lp=target_lp,
                    answer_tokens=per_answer, weights=weights, store=store)
