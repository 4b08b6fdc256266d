"""Proxy-tuning / emulated fine-tuning (EFT) at decoding time.

``log p(x) = log p_base(x) + beta * (log p_expert(x) - log p_anti(x))``, renormalised over the
vocabulary: proxy-tuning with ``base`` = a large pretrained model, ``expert`` / ``anti`` = a small
tuned model and its own base (Liu et al. 2024); EFT's other direction swaps the scales (Mitchell
et al. 2024). ``beta`` dials the behaviour at test time (0 = the base model exactly).

Three ways to use it, all over models that share one tokenizer:

- ``Proxy(base, expert, anti, beta).logprobs(ids, mask, index)``: the combined next-token log-probs at
  the positions ``index [b, k]`` (the unembedding runs only there; scoring with ``score_targets``);
- ``generate(model, tokenizer, texts, ...)``: greedy or sampled decoding from a ``Proxy`` or a
  ``Single`` model (alignloc tokenization; recomputes the prefix each step, no KV cache);
- ``ProxyTuningProcessor(expert, anti, beta)``: a Hugging Face ``LogitsProcessor`` for
  ``base.generate(..., logits_processor=[...])`` (left-padded batches).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from transformers import LogitsProcessor

from alignloc.models.decode import argmax, decode, sampler
from alignloc.models.hooks import logits_at
from alignloc.models.pair import LoadedModel, PairMismatchError, tokenizer_hash
from alignloc.prompts import Prompt
from alignloc.tokens import encode_prompts, pad_id


def combine(lp_base: Float[torch.Tensor, "... vocab"], lp_expert: Float[torch.Tensor, "... vocab"],
            lp_anti: Float[torch.Tensor, "... vocab"], beta: float) -> Float[torch.Tensor, "... vocab"]:
    """``log_softmax(lp_base + beta * (lp_expert - lp_anti))`` (inputs are log-probs or logits)."""
    lb, le, la = (torch.log_softmax(x.float(), -1) for x in (lp_base, lp_expert, lp_anti))
    return torch.log_softmax(lb + beta * (le - la), -1)


def check_same_tokenizer(*models: LoadedModel) -> int:
    """The shared vocabulary size; raises PairMismatchError (a ValueError) naming the model whose tokenizer differs."""
    ref = tokenizer_hash(models[0].tokenizer)
    for m in models[1:]:
        if tokenizer_hash(m.tokenizer) != ref:
            raise PairMismatchError(f"{m.ref} does not share the tokenizer of {models[0].ref} (proxy-tuning needs "
                                    "one vocabulary for all three models: pass models of one family)")
    return len(models[0].tokenizer)


@dataclass
class Single:
    """One model behind the same interface as ``Proxy``."""

    model: LoadedModel

    @property
    def tokenizer(self):
        """The model's tokenizer."""
        return self.model.tokenizer

    @torch.no_grad()
    def logprobs(self, ids: Int[torch.Tensor, "b pos"], mask: Int[torch.Tensor, "b pos"], index: Int[torch.Tensor, "b k"],
                 position_ids: Int[torch.Tensor, "b pos"] | None = None) -> Float[torch.Tensor, "b k vocab"]:
        """Next-token log-probs at positions ``index`` only (``position_ids`` for left-padded batches)."""
        m = self.model
        fwd = None if position_ids is None else (lambda **kw: m.model(position_ids=position_ids.to(kw["input_ids"].device), **kw))
        logits = logits_at(m.model, m.family, ids, mask, index, fwd)
        return torch.log_softmax(logits[..., : len(self.tokenizer)], -1)


@dataclass
class Proxy:
    """``base + beta * (expert - anti)`` in log-prob space (see the module docstring)."""

    base: LoadedModel
    expert: LoadedModel
    anti: LoadedModel
    beta: float = 1.0

    def __post_init__(self):
        self.vocab = check_same_tokenizer(self.base, self.expert, self.anti)

    @property
    def tokenizer(self):
        """The shared tokenizer."""
        return self.base.tokenizer

    @torch.no_grad()
    def parts(self, ids: Int[torch.Tensor, "b pos"], mask: Int[torch.Tensor, "b pos"],
              index: Int[torch.Tensor, "b k"]) -> tuple[torch.Tensor, ...]:
        """The three models' log-probs ``(base, expert, anti)`` at ``index``, each ``[b, k, vocab]``."""
        return tuple(Single(m).logprobs(ids, mask, index) for m in (self.base, self.expert, self.anti))

    def logprobs(self, ids: Int[torch.Tensor, "b pos"], mask: Int[torch.Tensor, "b pos"],
                 index: Int[torch.Tensor, "b k"]) -> Float[torch.Tensor, "b k vocab"]:
        """Combined next-token log-probs at positions ``index``."""
        return combine(*self.parts(ids, mask, index), self.beta)


def _texts(texts: list[str] | list[Prompt]) -> list[Prompt]:
    return [t if isinstance(t, Prompt) else Prompt(id=f"t{i}", text=t) for i, t in enumerate(texts)]


@torch.no_grad()
def generate(model: Single | Proxy, texts: list[str] | list[Prompt], max_new_tokens: int, bos: bool,
             greedy: bool = True, temperature: float = 1.0, seed: int = 0, batch_size: int = 64) -> list[list[int]]:
    """Decode ``max_new_tokens`` after each text: greedy, or sampled at ``temperature`` (seeded)."""
    rows = encode_prompts(model.tokenizer, _texts(texts), bos=bos).ids
    pick = argmax if greedy else sampler(temperature, torch.Generator().manual_seed(seed))
    return decode(rows, max_new_tokens, pad_id(model.tokenizer),
                  lambda ids, mask: model.logprobs(ids, mask, (mask.sum(1) - 1)[:, None])[:, 0], pick, batch_size)


@torch.no_grad()
def score_targets(model: Single | Proxy, prompts: list[Prompt], bos: bool, batch_size: int = 32) -> Float[torch.Tensor, " n"]:
    """Teacher-forced ``sum log p(target | text)`` of each prompt's target under ``model`` (per token where
    ``meta.per_token``; NaN without one)."""
    from alignloc.analyses.outputs import (
        gather_target_logprobs,
        per_token,
        scored_index,
        teacher_forced_batch,
    )

    out = torch.full((len(prompts),), torch.nan)
    rows = [i for i, p in enumerate(prompts) if p.target]
    for s in range(0, len(rows), batch_size):
        idx = rows[s : s + batch_size]
        ids, mask, ctx, tgt = teacher_forced_batch(model.tokenizer, [prompts[i] for i in idx], bos, None)
        chosen = [prompts[i] for i in idx]
        out[idx] = gather_target_logprobs(model.logprobs(ids, mask, scored_index(ctx, tgt)), tgt, per_token(chosen))
    return out


class ProxyTuningProcessor(LogitsProcessor):
    """Hugging Face ``LogitsProcessor``: turns the generating (base) model's scores into the proxy's.

    Runs ``expert`` and ``anti`` on the whole prefix at each step (no cache). Pads are recognised as
    the leading ``pad_token_id``s of a left-padded batch.
    """

    def __init__(self, expert: LoadedModel, anti: LoadedModel, beta: float = 1.0):
        self.expert, self.anti, self.beta = expert, anti, beta
        self.vocab = check_same_tokenizer(expert, anti)
        self.pad = pad_id(expert.tokenizer)

    @torch.no_grad()
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """New scores ``[b, vocab]``: the combined log-probs (vocab beyond the tokenizer's gets -inf)."""
        mask = ((input_ids != self.pad).long().cumsum(1) > 0).long()  # left padding
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        last = torch.full((input_ids.shape[0], 1), input_ids.shape[1] - 1)
        le, la = (Single(m).logprobs(input_ids, mask, last, pos)[:, 0].to(scores.device) for m in (self.expert, self.anti))
        out = torch.full_like(scores, float("-inf"))
        out[:, : self.vocab] = combine(scores[:, : self.vocab], le, la, self.beta).to(scores.dtype)
        return out
