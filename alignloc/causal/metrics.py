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

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
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

    @property
    def row_end(self) -> Int[torch.Tensor, " b"]:
        """One past each row's last scored position: the columns a metric needs (the rest is padding, or the
        last target token, which predicts nothing scored)."""
        return self.index.max(dim=1).values + 1

    def take(self, rows: Int[torch.Tensor, " m"]) -> ScoredBatch:
        """The batch of rows ``rows`` (in that order; a row may repeat)."""
        r = rows.tolist()
        return ScoredBatch(self.ids[rows], self.mask[rows], [self.ctx_lens[i] for i in r], [self.tgt[i] for i in r],
                           [self.foil[i] for i in r], [self.per_token[i] for i in r])


def pack(lengths: list[int], max_rows: int, overhead: float = 32.0) -> list[list[int]]:
    """Items (prompt rows, or patched prompt rows) grouped into forwards by length: indices, longest first.

    A forward computes ``len(group) x max(length)`` row-positions, plus a fixed cost worth
    ``overhead`` of them (per-call work, small-matrix inefficiency); groups of items sorted by
    length are chosen to minimise the sum (dynamic programming), at most ``max_rows`` to a group.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    ls = np.array([lengths[i] for i in order], dtype=float)
    n = len(ls)
    best, cut = np.zeros(n + 1), np.zeros(n + 1, dtype=int)
    for j in range(1, n + 1):  # best[j]: the first j items; the last group is order[i:j], as long as ls[i]
        i = np.arange(max(0, j - max_rows), j)
        cost = best[i] + overhead + (j - i) * ls[i]
        cut[j] = i[int(np.argmin(cost))]
        best[j] = cost.min()
    groups, j = [], n
    while j:
        groups.append(order[cut[j] : j])
        j = cut[j]
    return groups[::-1]


def in_length_groups(row_end: Int[torch.Tensor, " b"], run: Callable[[Int[torch.Tensor, " m"], int], torch.Tensor],
                     max_rows: int = 256, overhead: float = 32.0) -> torch.Tensor:
    """``run(rows, width)`` on groups of rows of similar ``row_end`` (``pack``, with its per-call ``overhead``), each
    computing its rows' first ``width`` positions only, reassembled in row order (``run`` returns ``[m, ...]``).

    A right-padded batch of prompts of mixed lengths pads every row to the longest: a forward per group
    of similar lengths computes the same values on fewer positions (per position, a causal model's output
    does not depend on the columns after it)."""
    out = None
    for group in pack(row_end.tolist(), max_rows, overhead):
        rows = torch.tensor(group)
        res = run(rows, int(row_end[rows].max()))
        if out is None:
            out = res.new_empty(len(row_end), *res.shape[1:])
        out[rows] = res
    return out


def scored_logits(model, batch: ScoredBatch, ids: Int[torch.Tensor, "n pos"] | None = None,
                  forward=None, grouped: bool = False) -> Float[torch.Tensor, "n k d_vocab"]:
    """Logits of ``model`` (a LoadedModel) on ``ids`` (default ``batch.ids``; may hold ``n = c * b``
    stacked copies of the batch) at ``batch.index`` only, on the CPU: what ``score`` reads.

    ``grouped``: one forward per group of rows of similar length (``in_length_groups``), each cut after its last
    scored position: the same values on fewer positions. Only where no hook reads the batch by row or
    position (patching and attribution hooks do: they keep the default)."""
    ids = batch.ids if ids is None else ids
    c = ids.shape[0] // len(batch.ctx_lens)
    if grouped and c == 1:
        return in_length_groups(batch.row_end, lambda rows, width: logits_at(
            model.model, model.family, ids[rows, :width], batch.mask[rows, :width], batch.index[rows], forward))
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
