"""What each model actually outputs for a prompt's ``target``: teacher-forced log-probs.

``log p(target | text)`` summed over the target's tokens (or their mean per token, for a prompt whose
``meta.per_token`` is true: a model's own answers of varying length are compared per token), and
whether the target's first token is the model's top-1 next token. These are the output-level knowledge and behavior metrics (e.g. the
log-prob of the correct fact, or of the tuned format marker / refusal string).
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int

from alignloc.models.hooks import logits_at
from alignloc.models.pair import LoadedModel
from alignloc.progress import iterate
from alignloc.prompts import Prompt
from alignloc.tokens import encode_prompts, pad_batch, pad_id

PER_TOKEN = "per_token"  # meta key: score this prompt's target by its mean log-prob per token


def per_token(prompts: list[Prompt]) -> list[bool]:
    """Per prompt, whether its target is scored per token (``meta.per_token``) rather than summed."""
    return [bool(p.meta.get(PER_TOKEN)) for p in prompts]


def answer_tokens(tokenizer, prompts: list[Prompt]) -> Float[torch.Tensor, " n"]:
    """Per prompt, what turns its score into a whole answer's: the target's token count where it is scored
    per token (``meta.per_token``), else 1. A gap times this is the gap per answer, the unit in which the
    verdict's minimum gap is set (a narrow change carried by an answer's first tokens is small per token)."""
    return torch.tensor([float(max(len(t), 1)) if pt else 1.0
                         for t, pt in zip(target_ids(tokenizer, prompts), per_token(prompts), strict=True)])


def target_ids(tokenizer, prompts: list[Prompt]) -> list[list[int]]:
    """Token ids of each prompt's target (empty when it has none)."""
    return [tokenizer.encode(p.target, add_special_tokens=False) if p.target else [] for p in prompts]


def first_target_ids(tokenizer, prompts: list[Prompt]) -> Int[torch.Tensor, " n"]:
    """The first target token per prompt, -1 where a prompt has no target."""
    return torch.tensor([t[0] if t else -1 for t in target_ids(tokenizer, prompts)], dtype=torch.long)


def teacher_forced_batch(tokenizer, prompts: list[Prompt], bos: bool, max_len: int | None, field: str = "text"):
    """``(input_ids [b, pos], attention_mask [b, pos], ctx_lens, target_ids)`` for ``<field> + target``."""
    ctx = encode_prompts(tokenizer, prompts, bos=bos, max_len=max_len, field=field).ids
    tgt = target_ids(tokenizer, prompts)
    ids, mask = pad_batch([c + t for c, t in zip(ctx, tgt, strict=True)], pad_id(tokenizer))
    return ids, mask, [len(c) for c in ctx], tgt


def scored_index(ctx_lens: list[int], tgt: list[list[int]]) -> Int[torch.Tensor, "b k"]:
    """The positions a teacher-forced metric reads, per row: ``ctx_len - 1 + j`` for each target token
    ``j`` (at least the last context token), padded by repeating a row's last one to ``k`` columns."""
    k = max(max(len(t), 1) for t in tgt)
    return torch.tensor([[n - 1 + min(j, max(len(t), 1) - 1) for j in range(k)] for n, t in zip(ctx_lens, tgt, strict=True)],
                        dtype=torch.long)


CHUNK_BYTES = 8 << 20  # rows of logits reduced at a time: temporaries glibc serves from its heap (not a fresh mmap)


def chunk_rows(d_vocab: int) -> int:
    """How many float32 rows of ``d_vocab`` logits make ``CHUNK_BYTES`` (at least one)."""
    return max(1, CHUNK_BYTES // max(1, d_vocab * 4))


def logsumexp_at(logits: Float[torch.Tensor, "... d_vocab"], *index: Int[torch.Tensor, " n"]) -> Float[torch.Tensor, " n"]:
    """``logsumexp`` (float32) of the rows ``logits[index]`` (e.g. ``rows, cols`` into ``[b, k, d_vocab]``), gathered
    and reduced a few at a time: with a 262k vocabulary the gathered rows and the reduction's temporary are tens of
    MiB each, which glibc maps fresh and page-faults in every time (on the Gemma-3-270M configuration the delta mask's
    KL of one sample took 143 ms that way and 21 ms in chunks of ``CHUNK_BYTES``)."""
    n = len(index[0])
    step = chunk_rows(logits.shape[-1])
    parts = [torch.logsumexp(logits[tuple(i[s : s + step] for i in index)].float(), -1) for s in range(0, n, step)]
    return torch.cat(parts) if parts else torch.zeros(0)


def gather_target_logprobs(logits: Float[torch.Tensor, "b k d_vocab"], tgt: list[list[int]],
                           mean: list[bool] | None = None) -> Float[torch.Tensor, " b"]:
    """``sum_j log p(target_j)`` per row from logits at the ``scored_index`` positions (column j
    predicts target token j), divided by the target's length where ``mean[row]`` (``per_token``);
    NaN for a row without a target. Each log-prob is ``logit - logsumexp`` of its row (``logsumexp_at``: no
    log-softmax of the whole ``[b, k, d_vocab]`` block)."""
    rows = [(b, j, tok) for b, t in enumerate(tgt) for j, tok in enumerate(t)]
    out = torch.full((logits.shape[0],), torch.nan)
    if not rows:
        return out
    r, c, tok = (torch.tensor(v) for v in zip(*rows, strict=True))
    lp = logits[r, c, tok].float() - logsumexp_at(logits, r, c)  # [target tokens]
    total = torch.zeros(logits.shape[0]).index_add_(0, r, lp)
    for b, t in enumerate(tgt):
        if t:
            out[b] = total[b] / len(t) if mean is not None and mean[b] else total[b]
    return out


def full_target_logprobs(logits: Float[torch.Tensor, "b pos d_vocab"], ctx_lens: list[int],
                         tgt: list[list[int]], mean: list[bool] | None = None) -> Float[torch.Tensor, " b"]:
    """``gather_target_logprobs`` from full-sequence logits (e.g. TransformerLens's), read at ``scored_index``."""
    index = scored_index(ctx_lens, tgt).to(logits.device)
    return gather_target_logprobs(torch.take_along_dim(logits, index[..., None], dim=1), tgt, mean)


@torch.no_grad()
def target_logprobs(
    model: LoadedModel, prompts: list[Prompt], bos: bool, batch_size: int = 16
) -> Float[torch.Tensor, " n"]:
    """``sum_t log p(target_t | text, target_<t)`` per prompt (its mean over ``t`` where ``meta.per_token``;
    NaN without a target); the unembedding runs only at the target-predicting positions."""
    out = torch.full((len(prompts),), torch.nan)
    # batched by length (a row's padding changes nothing it reads): on mixed suites this halves the padded tokens
    lengths = encode_prompts(model.tokenizer, prompts, bos=bos, max_len=model.max_len).lengths
    rows = sorted((i for i, p in enumerate(prompts) if p.target), key=lambda i: (lengths[i], len(prompts[i].target)))
    for s in iterate(range(0, len(rows), batch_size), f"target log-probs of {model.ref}", unit="batch"):
        idx = rows[s : s + batch_size]
        ids, mask, ctx_lens, tgt = teacher_forced_batch(model.tokenizer, [prompts[i] for i in idx], bos, model.max_len)
        logits = logits_at(model.model, model.family, ids, mask, scored_index(ctx_lens, tgt))
        out[idx] = gather_target_logprobs(logits, tgt, per_token([prompts[i] for i in idx]))
    return out
