"""The concentration profile of a gap: how many layers carry it, each way, with intervals.

For k = 1..L, the set ``S_k`` of the k top-ranked layers (a ranking of the layers: the learned mask's
gates, or single-layer grafting) is grafted both ways, and each prompt's metric is kept:

- sufficiency(k) = mean_i(M_i(base + tuned S_k) - M_i(base)) / mean_i(M_i(tuned) - M_i(base))
- necessity(k)   = mean_i(M_i(tuned) - M_i(tuned - S_k)) / mean_i(M_i(tuned) - M_i(base))

with percentile bootstrap intervals over prompts (the same resamples for every k and both ways; the
ratio of means is recomputed in each). ``k_sufficient[q]`` / ``k_necessary[q]``: the smallest k whose
point estimate carries ``q`` of the gap (q = 0.5, 0.8, 0.9), None if no k does.

**Saturation.** When the tuned model already gives its targets a probability near 1, the log-prob
barely moves when a part of the change is reverted (the target stays on top), so necessity reads
near 0 for every small set, however much of the mechanism is removed. The profile records the tuned
model's mean per-token target probability and flags ``saturated`` at or above ``SATURATED``; then
necessity is measured again on the logit difference between the target's first token and the
foil's (the prompt's ``foil``, else the base model's own top next token: what the base would say
instead), which keeps falling where the log-prob cannot, and the profile reads sufficiency on the
log-prob (grafting into the base climbs from far below: it does not saturate) and necessity on the
logit difference (``metric`` is then ``logprob+logit_diff``; both whole profiles are kept, as
``logprob_profile`` and ``logit_diff_profile``). Read on the logit difference alone, sufficiency
would demand that a graft rebuild the tuned model's whole margin, not its behavior.
"""

from __future__ import annotations

import dataclasses

import torch
from jaxtyping import Float

from alignloc.analyses.concentration import profile_from
from alignloc.causal.graft import grafted
from alignloc.causal.metrics import ScoredBatch, score, scored_batch, scored_logits
from alignloc.causal.resumed import Chain, ResumedScorer
from alignloc.models.pair import LoadedModel, ModelPair
from alignloc.progress import iterate
from alignloc.prompts import Prompt

SATURATED = 0.9  # mean per-token target probability of the tuned model at which log-prob necessity saturates


def batches(tokenizer, prompts: list[Prompt], bos: bool, max_len: int | None, batch_size: int = 16) -> list[ScoredBatch]:
    """The prompts as teacher-forced batches, tokenized once for every graft."""
    return [scored_batch(tokenizer, prompts[s : s + batch_size], bos, max_len) for s in range(0, len(prompts), batch_size)]


def ranking_from_windows(windows: dict) -> list[int]:
    """Layers ordered by single-layer grafting, ``sufficiency + necessity`` (the window sweep's size 1);
    ties by the smaller mean of the two, then the layer index."""
    row = windows["windows"]["1"]
    score_of = {s: (a if a == a else 0.0) + (b if b == b else 0.0) for s, a, b in
                zip(row["starts"], row["sufficiency"], row["necessity"], strict=True)}
    return sorted(score_of, key=lambda i: (-score_of[i], i))


@torch.no_grad()
def _graft_scores(pair: ModelPair, parts: list[ScoredBatch], sets: list[list[int]],
                  resumed: tuple[ResumedScorer, ResumedScorer] | None) -> dict[str, tuple]:
    """Each prompt's ``logprob`` and ``logit_diff`` (to its foil, or the base's own next token where it has none)
    under base, tuned and every set grafted both ways: ``{metric: (m_base [n], m_tuned [n], up [k, n], down [k, n])}``.
    Each graft is one forward (from its lowest layer with ``resumed``, the scorers of base and tuned on ``parts``'
    batches) whose logits both metrics read."""
    chains = (Chain(resumed[0]), Chain(resumed[1])) if resumed else None  # each set adds one layer to the previous

    def logits(side: int, model: LoadedModel, new: int | None = None) -> list[torch.Tensor]:
        """Per batch, the scored logits of ``model`` as it is now: the model itself (``new`` None), or grafted with
        the previous set plus layer ``new``."""
        if not resumed:
            return [scored_logits(model, b, grouped=True) for b in parts]
        if new is None:
            return [resumed[side].logits(i) for i in range(len(parts))]
        return [chains[side].logits(i, new) for i in range(len(parts))]

    base_logits = logits(0, pair.base)
    foiled = [base_foils(b, lg) for b, lg in zip(parts, base_logits, strict=True)]

    def scored(lgs: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"logprob": torch.cat([score(lg, b, "logprob").float() for lg, b in zip(lgs, parts, strict=True)]),
                "logit_diff": torch.cat([score(lg, b, "logit_diff").float() for lg, b in zip(lgs, foiled, strict=True)])}

    ref = (scored(base_logits), scored(logits(1, pair.tuned)))
    up, down, previous = [], [], set()
    for s in iterate(sets, "concentration profile", unit="set"):
        new = min(set(s) - previous)  # the sets are nested: the layer this one adds
        previous = set(s)
        with grafted(pair.base, pair.tuned, s) as m:
            up.append(scored(logits(0, m, new)))
        with grafted(pair.tuned, pair.base, s) as m:
            down.append(scored(logits(1, m, new)))
    return {k: (ref[0][k], ref[1][k], torch.stack([u[k] for u in up]), torch.stack([d[k] for d in down]))
            for k in ("logprob", "logit_diff")}


def concentration_profile(pair: ModelPair, prompts: list[Prompt], bos: bool, ranking: list[int], *,
                          ranking_source: str, n_boot: int = 1000, seed: int = 0, batch_size: int = 16,
                          resumed: tuple[ResumedScorer, ResumedScorer] | None = None, max_k: int | None = None) -> dict:
    """The profile of the gap of ``prompts`` (those with a target) over the nested top-k sets of ``ranking``;
    re-read on the logit difference to the foil when the log-prob saturates (see the module docstring): both
    metrics are read off the same forwards, ``2 + 2 k`` passes over the prompts in all.

    ``resumed``: ``ResumedScorer``s of base and tuned on the same prompts (e.g. the graft windows'): every set
    is then scored from its lowest layer up, with the same numbers (``causal.resumed``). ``max_k``: only the sets
    of at most ``max_k`` layers (the first ``max_k`` of the whole profile, with the same numbers; ``k_sufficient``
    and ``k_necessary`` are then None where no set of at most ``max_k`` layers reaches the level)."""
    chosen = [p for p in prompts if p.target]
    if not chosen:
        raise ValueError("a concentration profile needs prompts with a 'target'")
    parts = resumed[0].parts if resumed else batches(pair.tokenizer, chosen, bos, pair.tuned.max_len, batch_size)
    if sum(len(b.tgt) for b in parts) != len(chosen):
        raise ValueError("resumed: scorers of other prompts than these")
    sets = [sorted(ranking[:k]) for k in range(1, min(len(ranking), max_k or len(ranking)) + 1)]
    scores = _graft_scores(pair, parts, sets, resumed)
    passes = 2 + 2 * len(sets)
    out = profile_from(*scores["logprob"], sets, n_boot, seed) | {"metric": "logprob", "passes": passes}
    lengths = torch.tensor([max(len(t), 1) for b in parts for t in b.tgt], dtype=torch.float32)
    p_tuned = float((scores["logprob"][1] / lengths).exp().mean())
    out |= {"ranking": list(ranking), "ranking_source": ranking_source, "max_k": len(sets),
            "tuned_target_probability": p_tuned, "saturated": p_tuned >= SATURATED}
    if out["saturated"]:
        alt = profile_from(*scores["logit_diff"], sets, n_boot, seed) | {"metric": "logit_diff", "passes": passes}
        foils = "the prompts' foils" if all(p.foil for p in chosen) else "the base model's own next token where a prompt has no foil"
        return {**out, "metric": "logprob+logit_diff", "necessity": alt["necessity"], "k_necessary": alt["k_necessary"],
                "logprob_profile": out, "logit_diff_profile": alt,
                "note": f"the tuned model gives its targets probability {p_tuned:.2f} per token, where the log-prob "
                        "saturates when a part of the change is reverted: sufficiency is read on the log-prob, necessity "
                        f"on the logit difference of the target's first token to {foils}"}
    return out


def base_foils(b: ScoredBatch, base_logits: Float[torch.Tensor, "b k d_vocab"]) -> ScoredBatch:
    """``b`` with a foil on every row that has none: the base model's top next token at the last context position
    (its second choice where that is the target's first token), read off the base's ``scored_logits`` of ``b``."""
    top2 = base_logits[:, 0].topk(2, dim=-1).indices  # [b, 2]: column 0 = the last context token
    foil = [f if f >= 0 else int(t2[1] if int(t2[0]) == t[0] else t2[0]) for f, t2, t in zip(b.foil, top2, b.tgt, strict=True)]
    return dataclasses.replace(b, foil=foil)
