"""What a causal experiment measures on a teacher-forced batch: one number per prompt.

- ``logprob``: ``sum_j log p(target_j | text, target_<j)`` (the default; the mean over ``j`` for a
  prompt with ``meta.per_token``, as the tuned model's own answers are scored);
- ``logit_diff``: ``logit(target) - logit(foil)`` at the last context token (first tokens of the
  prompt's ``target`` and ``foil``: e.g. new vs old fact, context vs memorised answer);
- ``kl``: ``-KL(reference || model)`` over the target positions, where the reference is the donor
  (cross-model: the tuned model; within-model: the clean run), so 0 means "as the reference".

``auto`` picks ``logit_diff`` when every prompt has a ``foil`` and ``logprob`` otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int

from alignloc.analyses.outputs import (
    gather_target_logprobs,
    per_token,
    scored_index,
    teacher_forced_batch,
)
from alignloc.models.hooks import logits_at
from alignloc.prompts import Prompt

METRICS = ("logprob", "logit_diff", "kl")


@dataclass
class ScoredBatch:
    """Teacher-forced ``text + target`` tokens of a prompt batch, and what to score in them."""

    ids: Int[torch.Tensor, "b pos"]
    mask: Int[torch.Tensor, "b pos"]
    ctx_lens: list[int]
    tgt: list[list[int]]
    foil: list[int]  # first foil token per prompt, -1 without a foil
    per_token: list[bool]  # the logprob metric's mean per target token (``meta.per_token``) instead of the sum

    @property
    def last(self) -> Int[torch.Tensor, " b"]:
        """Index of the last context token per prompt (the one predicting the first target token)."""
        return torch.tensor([n - 1 for n in self.ctx_lens])

    @property
    def index(self) -> Int[torch.Tensor, "b k"]:
        """The positions every metric reads (``scored_index``: last context token and target-predicting ones)."""
        return scored_index(self.ctx_lens, self.tgt)

    def take(self, rows: Int[torch.Tensor, " m"]) -> ScoredBatch:
        """The batch of rows ``rows`` (in that order; a row may repeat)."""
        r = rows.tolist()
        return ScoredBatch(self.ids[rows], self.mask[rows], [self.ctx_lens[i] for i in r], [self.tgt[i] for i in r],
                           [self.foil[i] for i in r], [self.per_token[i] for i in r])


def scored_logits(model, batch: ScoredBatch, ids: Int[torch.Tensor, "n pos"] | None = None,
                  forward=None) -> Float[torch.Tensor, "n k d_vocab"]:
    """Logits of ``model`` (a LoadedModel) on ``ids`` (default ``batch.ids``; may hold ``n = c * b``
    stacked copies of the batch) at ``batch.index`` only, on the CPU: what ``score`` reads."""
    ids = batch.ids if ids is None else ids
    c = ids.shape[0] // len(batch.ctx_lens)
    return logits_at(model.model, model.family, ids, batch.mask.repeat(c, 1), batch.index.repeat(c, 1), forward)


def resolve_metric(metric: str, prompts: list[Prompt]) -> str:
    """``auto`` -> ``logit_diff`` if every prompt has a foil else ``logprob``; check the name and the foils."""
    if metric == "auto":
        return "logit_diff" if all(p.foil for p in prompts) else "logprob"
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS} or 'auto', got {metric!r}")
    missing = [p.id for p in prompts if metric == "logit_diff" and not p.foil]
    if missing:
        raise ValueError(f"metric 'logit_diff' needs a 'foil' in every prompt; missing in {missing[:3]}")
    return metric


def scored_batch(tokenizer, prompts: list[Prompt], bos: bool, max_len: int | None,
                 text: str = "text", like: ScoredBatch | None = None) -> ScoredBatch:
    """Tokenize ``prompt.<text> + target``; with ``like``, require the same token positions as that batch.

    ``text="corrupt_text"`` with ``like=<the clean batch>`` gives the corrupted run of a
    within-model patching experiment, whose tokens must line up with the clean ones.
    """
    missing = [p.id for p in prompts if getattr(p, text) is None]
    if missing:
        raise ValueError(f"prompts {missing[:3]} have no '{text}'; add it to the prompt file or drop them")
    ids, mask, ctx_lens, tgt = teacher_forced_batch(tokenizer, prompts, bos, max_len, field=text)
    if like is not None:
        for p, n, m in zip(prompts, ctx_lens, like.ctx_lens, strict=True):
            if n != m:
                raise ValueError(
                    f"prompt {p.id!r}: '{text}' has {n} tokens but 'text' has {m}; within-model "
                    "patching needs clean and corrupted prompts of the same token length"
                )
    foil = [tokenizer.encode(p.foil, add_special_tokens=False)[0] if p.foil else -1 for p in prompts]
    return ScoredBatch(ids, mask, ctx_lens, tgt, foil, per_token(prompts))


def score(logits: Float[torch.Tensor, "n k d_vocab"], batch: ScoredBatch, metric: str,
          ref_logprobs: Float[torch.Tensor, "b k d_vocab"] | None = None) -> Float[torch.Tensor, " n"]:
    """The metric per prompt from ``scored_logits`` (``n = c * b``: ``c`` stacked copies of the batch).

    ``ref_logprobs`` (log-softmax of the reference run's scored logits) is needed for ``kl``.
    """
    k = logits.shape[0] // len(batch.ctx_lens)
    if metric == "logprob":
        return gather_target_logprobs(logits, batch.tgt * k, batch.per_token * k)
    if metric == "logit_diff":
        tgt0 = torch.tensor([t[0] for t in batch.tgt]).repeat(k)
        at = logits[:, 0].float()  # column 0 = the last context token
        return at.gather(1, tgt0[:, None])[:, 0] - at.gather(1, torch.tensor(batch.foil).repeat(k)[:, None])[:, 0]
    if metric == "kl":
        if ref_logprobs is None:
            raise ValueError("metric 'kl' needs the reference run's log-probs")
        logp = torch.log_softmax(logits.float(), -1)
        ref = ref_logprobs.repeat(k, 1, 1)
        kl = (ref.exp() * (ref - logp)).sum(-1)  # [k*b, cols]
        out = torch.zeros(logits.shape[0])
        for r, t in enumerate(batch.tgt * k):
            out[r] = -kl[r, : max(len(t), 1)].mean()
        return out
    raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
