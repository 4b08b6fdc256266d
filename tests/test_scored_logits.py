"""The unembedding runs only at the positions a metric reads, and gives the full-sequence values there."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import alignloc
from alignloc.analyses.outputs import answer_tokens, scored_index, target_logprobs
from alignloc.causal.metrics import score, scored_batch, scored_logits
from alignloc.models.families import get_module
from alignloc.models.hooks import count_hooks
from alignloc.prompts import Prompt
from tests.tiny_models import ARCHS

PROMPTS = [
    Prompt(id="a", text="The cat sat on the", target=" mat .", foil=" park"),
    Prompt(id="b", text="Alice lives in Paris and Bob lives in", target=" Rome", foil=" Paris"),
    Prompt(id="c", text="A dog ran", target=" in the park and the cat watched", foil=" on"),
]


def _full(lm, batch) -> torch.Tensor:
    """The old way: logits over the whole sequence, ``[b, pos, d_vocab]``."""
    with torch.no_grad():
        return lm.model(input_ids=batch.ids, attention_mask=batch.mask, use_cache=False).logits.float()


def test_scored_index_reads_last_context_token_and_each_target_predictor():
    idx = scored_index([4, 7, 2], [[5, 6], [9], []])
    assert idx.tolist() == [[3, 4], [6, 6], [1, 1]]  # padded by repeating a row's last position


@pytest.mark.parametrize("arch", ARCHS)
def test_scored_logits_equal_full_sequence_logits(arch_pairs, arch):
    pair = alignloc.load_pair(*map(str, arch_pairs[arch]), device="cpu", compute_dtype="float32")
    lm = pair.base
    b = scored_batch(pair.tokenizer, PROMPTS, True, lm.max_len)
    assert len({len(t) for t in b.tgt}) > 1 and b.ids.shape[1] > b.index.shape[1]  # ragged targets, fewer columns
    with torch.no_grad():
        part = scored_logits(lm, b)
    full = _full(lm, b)
    assert part.shape == (3, b.index.shape[1], full.shape[-1])
    want = torch.take_along_dim(full, b.index[..., None], dim=1)
    torch.testing.assert_close(part, want, atol=1e-5, rtol=1e-5)
    assert count_hooks(lm.model) == 0
    if arch == "gemma2":  # soft-capping is applied after the head: the values are the capped ones
        assert lm.config.final_logit_softcapping and float(part.abs().max()) <= lm.config.final_logit_softcapping
    # the metrics read the same numbers the full logits gave
    ref_full = torch.log_softmax(full, -1)
    logp_full = torch.stack([ref_full[r, n - 1 : n - 1 + len(t)].gather(1, torch.tensor(t)[:, None]).sum()
                             for r, (n, t) in enumerate(zip(b.ctx_lens, b.tgt, strict=True))])
    torch.testing.assert_close(score(part, b, "logprob"), logp_full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(target_logprobs(lm, PROMPTS, True), logp_full, atol=1e-5, rtol=1e-5)
    # batched by length, in another order than the prompts': each value still lands on its own prompt
    torch.testing.assert_close(target_logprobs(lm, PROMPTS, True, batch_size=2), logp_full, atol=1e-5, rtol=1e-5)
    # meta.per_token: the same sums divided by each target's length, in both the causal metric and the output line
    per = [dataclasses.replace(p, meta={"per_token": True}) if p.id != "b" else p for p in PROMPTS]
    bp = scored_batch(pair.tokenizer, per, True, lm.max_len)
    mean_full = logp_full / torch.tensor([len(t) if p.id != "b" else 1 for p, t in zip(per, b.tgt, strict=True)])
    assert bp.per_token == [True, False, True] and not torch.allclose(mean_full, logp_full)
    torch.testing.assert_close(score(part, bp, "logprob"), mean_full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(target_logprobs(lm, per, True), mean_full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(score(part.repeat(2, 1, 1), bp, "logprob"), mean_full.repeat(2), atol=1e-5, rtol=1e-5)
    # a per-token score times its answer's token count is the whole answer's (the verdict's minimum gap unit)
    torch.testing.assert_close(mean_full * answer_tokens(pair.tokenizer, per), logp_full, atol=1e-5, rtol=1e-5)
    assert answer_tokens(pair.tokenizer, PROMPTS).tolist() == [1.0, 1.0, 1.0]  # summed targets are per answer already
    last = full[torch.arange(3), b.last]
    diff = last.gather(1, torch.tensor([t[0] for t in b.tgt])[:, None])[:, 0] - last.gather(1, torch.tensor(b.foil)[:, None])[:, 0]
    torch.testing.assert_close(score(part, b, "logit_diff"), diff, atol=1e-5, rtol=1e-5)


def test_unembedding_input_is_only_the_scored_rows(llama_pair):
    lm = alignloc.load_model(str(llama_pair[0]), device="cpu")
    b = scored_batch(lm.tokenizer, PROMPTS, True, lm.max_len)
    seen = []
    handle = get_module(lm.model, lm.family.unembed).register_forward_hook(lambda m, a, o: seen.append(tuple(a[0].shape)))
    with torch.no_grad():
        scored_logits(lm, b)
    handle.remove()
    distinct = sum(len(set(row.tolist())) for row in b.index)  # scored positions, padding repeats dropped
    assert distinct < b.index.numel()  # rows of unequal length: the repeats are real, and skipped
    assert seen == [(1, distinct, lm.d_model)]  # the head never saw the other positions, nor a repeat


def test_take_selects_rows_of_a_scored_batch_in_order_with_repeats(llama_pair):
    lm = alignloc.load_model(str(llama_pair[0]), device="cpu")
    b = scored_batch(lm.tokenizer, PROMPTS, True, lm.max_len)
    sub = b.take(torch.tensor([2, 0, 2]))
    assert torch.equal(sub.ids, b.ids[[2, 0, 2]]) and sub.ctx_lens == [b.ctx_lens[i] for i in (2, 0, 2)]
    assert sub.tgt == [b.tgt[2], b.tgt[0], b.tgt[2]] and sub.foil == [b.foil[2], b.foil[0], b.foil[2]]
    full = scored_logits(lm, b)
    # scoring the taken rows equals taking the rows of the scored batch (same index, same metric)
    torch.testing.assert_close(score(full[[2, 0, 2]], sub, "logit_diff"), score(full, b, "logit_diff")[[2, 0, 2]])


def _positions_into_block0(lm, fn) -> tuple[object, int]:
    """``fn()``'s result and the row-positions the first block computed while it ran."""
    seen = []

    def pre(_module, args, kwargs):
        h = args[0] if args else kwargs["hidden_states"]
        seen.append(h.shape[0] * h.shape[1])

    handle = get_module(lm.model, lm.family.layers)[0].register_forward_pre_hook(pre, with_kwargs=True)
    try:
        out = fn()
    finally:
        handle.remove()
    return out, sum(seen)


def test_grouped_forwards_give_the_same_logits_on_fewer_positions(llama_pair):
    """Rows of similar length run together, each cut after its last scored position: the same logits at the scored
    positions as one padded forward (each row's values land on that row), for a plain forward and for a forward
    resumed at a grafted block, on fewer positions."""
    from alignloc.causal.graft import grafted
    from alignloc.causal.resumed import ResumedScorer

    pair = alignloc.load_pair(*map(str, llama_pair), device="cpu", compute_dtype="float32")
    lm, prompts = pair.base, [PROMPTS[i] for i in (2, 0, 1, 2, 1, 0)]  # three lengths, interleaved
    b = scored_batch(lm.tokenizer, prompts, True, lm.max_len)
    with torch.no_grad():
        padded, n_padded = _positions_into_block0(lm, lambda: scored_logits(lm, b))
        grouped, n_grouped = _positions_into_block0(lm, lambda: scored_logits(lm, b, grouped=True))
    assert n_padded == b.ids.numel() and n_grouped < n_padded
    assert n_grouped >= int(b.row_end.sum())  # at least every row's own positions
    torch.testing.assert_close(grouped, padded, atol=1e-5, rtol=1e-5)
    scorer = ResumedScorer(lm, prompts, True, 8)
    assert scorer.exact and len(scorer.parts) == 1
    with grafted(pair.base, pair.tuned, [1]), torch.no_grad():
        want = scored_logits(lm, b)
        got = scorer.logits(0, start=1)
    assert not torch.allclose(want, padded, atol=1e-3)  # the graft changed the model
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("d_vocab", [50, 262144])
def test_rows_reduced_a_few_at_a_time_equal_the_log_softmax_of_the_block(d_vocab):
    """Target log-probs (``logit - logsumexp`` per scored row) and the delta mask's KL (``sum p log p - p . x + sum p
    logsumexp(x)``), reduced ``CHUNK_BYTES`` of rows at a time (8 rows of a 262k vocabulary: here three chunks), equal
    the log-softmax of the whole block, including rows without a target, a single-token one and a mean per token."""
    from alignloc.analyses.outputs import gather_target_logprobs, logsumexp_at
    from alignloc.causal.mask import _kl, _reference

    g = torch.Generator().manual_seed(0)
    logits = 4 * torch.randn(6, 4, d_vocab, generator=g)  # [b, k, d_vocab]
    tgt, mean = [[1, 2, 3], [], [4], [5, 6, 7, 8], [9, 9], [0, 3, 1, 2]], [False, False, True, True, False, False]
    logp = torch.log_softmax(logits, -1)
    want = torch.tensor([logp[b, torch.arange(len(t)), t].sum() / (len(t) if m else 1) if t else float("nan")
                         for b, (t, m) in enumerate(zip(tgt, mean, strict=True))])
    got = gather_target_logprobs(logits, tgt, mean)
    assert torch.equal(got.isnan(), want.isnan()) and torch.allclose(got.nan_to_num(), want.nan_to_num(), rtol=3e-6, atol=1e-5)
    rows, cols = torch.arange(6).repeat_interleave(4), torch.arange(4).repeat(6)  # 24 rows
    assert torch.allclose(logsumexp_at(logits, rows, cols), torch.logsumexp(logits, -1).view(-1), rtol=3e-6, atol=1e-5)
    ref = torch.log_softmax(4 * torch.randn(24, d_vocab, generator=g), -1)
    plain = (ref.exp() * (ref - logp[rows, cols])).sum(-1).mean()
    assert float(_kl(_reference(ref), logits, rows, cols)) == pytest.approx(float(plain), rel=1e-5)


def test_rows_per_chunk_hold_eight_mib_of_float32_logits():
    """``chunk_rows``: 8 rows of Gemma's 262k vocabulary, 42 of SmolLM2's 49k, never fewer than one."""
    from alignloc.analyses.outputs import chunk_rows

    assert (chunk_rows(262144), chunk_rows(49152), chunk_rows(10**9)) == (8, 42, 1)
