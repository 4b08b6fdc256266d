"""Proxy-tuning arithmetic and generation on the zoo models."""

from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessorList

from alignloc.decoding.proxy import (
    Proxy,
    ProxyTuningProcessor,
    Single,
    combine,
    generate,
    score_targets,
)
from alignloc.models.pair import load_model
from alignloc.prompts import Prompt
from alignloc.tokens import encode_prompts, pad_id
from alignloc.zoo import organism_prompts


@pytest.fixture(scope="module")
def trio(zoo_tiny):
    """(large base, small tuned, small base)."""
    return load_model("zoo:base-large"), load_model("zoo:chat-sft-full"), load_model("zoo:base")


def chat_texts(n: int = 6) -> list[str]:
    return [p.text for p in organism_prompts("chat-sft-full") if p.kind == "behavior"][:n]


def test_combine_is_normalised_and_beta_zero_is_the_base():
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(3, 5, 11, generator=g) * 4 for _ in range(3))
    for beta in (0.0, 0.5, 1.0, 2.0):
        assert torch.allclose(combine(a, b, c, beta).exp().sum(-1), torch.ones(3, 5), atol=1e-5)
    assert torch.allclose(combine(a, b, c, 0.0), torch.log_softmax(a, -1), atol=1e-6)
    assert torch.allclose(combine(a, b, b, 1.7), torch.log_softmax(a, -1), atol=1e-6)  # identical small models
    assert not torch.allclose(combine(a, b, c, 1.0), torch.log_softmax(a, -1), atol=1e-2)


def test_proxy_at_beta_zero_and_with_identical_small_models_is_the_large_base(trio):
    large, tuned, small = trio
    texts = chat_texts()
    ref = generate(Single(large), texts, 4, bos=True)
    assert generate(Proxy(large, tuned, small, beta=0.0), texts, 4, bos=True) == ref
    assert generate(Proxy(large, small, small, beta=1.0), texts, 4, bos=True) == ref
    shifted = generate(Proxy(large, tuned, small, beta=1.0), texts, 4, bos=True)
    assert shifted != ref  # the tuned model's format marker comes through
    prompts = [p for p in organism_prompts("chat-sft-full") if p.kind == "behavior"][:6]
    lp = score_targets(Proxy(large, tuned, small, 1.0), prompts, bos=True)
    assert (lp > score_targets(Single(large), prompts, bos=True)).all()


def test_hf_generate_with_the_processor_matches(trio):
    large, tuned, small = trio
    texts = chat_texts(4)
    ours = generate(Proxy(large, tuned, small, beta=1.0), texts, 3, bos=True)
    tok = large.tokenizer
    enc = encode_prompts(tok, [Prompt(id=str(i), text=t) for i, t in enumerate(texts)], bos=True).ids
    width = max(len(x) for x in enc)
    ids = torch.tensor([[pad_id(tok)] * (width - len(x)) + x for x in enc])  # left padding
    mask = (torch.arange(width)[None] >= torch.tensor([width - len(x) for x in enc])[:, None]).long()
    out = large.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=3, do_sample=False,
                               logits_processor=LogitsProcessorList([ProxyTuningProcessor(tuned, small, 1.0)]),
                               pad_token_id=pad_id(tok))
    assert out[:, width:].tolist() == ours


def test_sampling_is_seeded_and_sums_to_one(trio):
    large, tuned, small = trio
    proxy = Proxy(large, tuned, small, beta=1.5)
    texts = chat_texts(4)
    a = generate(proxy, texts, 3, bos=True, greedy=False, seed=7)
    assert a == generate(proxy, texts, 3, bos=True, greedy=False, seed=7)
    assert generate(proxy, texts, 3, bos=True, greedy=False, temperature=1e-4) == generate(proxy, texts, 3, bos=True)
    ids = torch.tensor([[1, 5, 9, 12]])
    assert torch.allclose(proxy.logprobs(ids, torch.ones_like(ids), torch.arange(4)[None]).exp().sum(-1), torch.ones(1, 4),
                          atol=1e-5)


def test_models_must_share_a_tokenizer(trio, llama_pair):
    other = load_model(str(llama_pair[0]))
    with pytest.raises(ValueError, match="does not share the tokenizer"):
        Proxy(trio[0], other, trio[2])
