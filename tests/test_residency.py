"""One model in memory at a time: release and reload, a capture and a layer-diff that hold one model
give the results of holding both; grafting swaps weights in place; bf16 against fp32 on an organism."""

from __future__ import annotations

import json

import pytest
import torch

import alignloc
from alignloc.causal.graft import grafted, swapped
from alignloc.experiments.layerdiff import layer_diff
from alignloc.models.residency import CheckpointWeights, head_only
from alignloc.prompts import Prompt
from tests.conftest import tiny_zoo_with
from tests.tiny_models import ARCHS

TEXTS = ["The cat sat on the", "Alice lives in Paris and Bob lives in", "A dog ran in the park", "User: what is it ? Assistant:"]
PROMPTS = [Prompt(id=f"p{i}", text=TEXTS[i % 4] + " ." * (i // 4), kind="behavior" if i % 2 else "knowledge",
                  target=" Paris", label=i % 2) for i in range(12)]


def test_release_frees_and_reloads_the_same_weights(llama_pair):
    lm = alignloc.load_model(str(llama_pair[0]), device="cpu")
    ids = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad():
        before = lm.model(input_ids=ids).logits
    h = lm.weights_hash
    lm.release()
    assert not lm.resident and lm.provenance()["weights_sha256"] == h and lm.n_layers == 3  # config and hash kept
    with torch.no_grad():
        after = lm.model(input_ids=ids).logits  # loaded again on use
    assert lm.resident and torch.equal(before, after)
    assert not alignloc.load_pair(*map(str, llama_pair), device="cpu", one_at_a_time=True).base.resident


@pytest.mark.parametrize("arch", ARCHS)
def test_checkpoint_weights_equal_the_state_dict(arch_pairs, arch):
    lm = alignloc.load_model(str(arch_pairs[arch][1]), device="cpu")
    state = lm.model.state_dict()
    streamed = CheckpointWeights(lm)  # tied heads (gpt2, gemma2) and renamed ones (gpt_neox embed_out) included
    assert set(streamed) == set(state)
    for name, t in state.items():
        assert torch.equal(streamed[name], t), name


def test_head_copy_gives_the_same_lens(llama_pair):
    from alignloc.analyses.lens import lens_logprobs

    lm = alignloc.load_model(str(llama_pair[1]), device="cpu")
    h = torch.randn(5, lm.d_model)
    want = lens_logprobs(lm, h)
    head = head_only(lm)
    lm.release()
    assert torch.equal(lens_logprobs(head, h), want)


@pytest.mark.parametrize("arch", ["gpt_neox", "gpt2"])
def test_layer_diff_one_model_at_a_time_equals_both_resident(arch_pairs, arch, tmp_path):
    base, tuned = map(str, arch_pairs[arch])
    kw = dict(n_boot=20, probes=False, write=False)
    both = layer_diff(alignloc.load_pair(base, tuned, device="cpu"), PROMPTS, tmp_path / "both", **kw)
    pair = alignloc.load_pair(base, tuned, device="cpu", one_at_a_time=True)
    one = layer_diff(pair, PROMPTS, tmp_path / "one", one_at_a_time=True, **kw)
    assert json.dumps(both["measures"], sort_keys=True) == json.dumps(one["measures"], sort_keys=True)
    assert [pair.base.resident, pair.tuned.resident].count(True) == 1
    assert both["measures"]["weights"]["changed_params"] > 0


def test_capture_side_by_side_with_release(llama_pair, tmp_path):
    both = alignloc.capture(alignloc.load_pair(*map(str, llama_pair), device="cpu"), PROMPTS, out=tmp_path / "a",
                            sites="resid_post,mlp_out", batch_size=5)
    pair = alignloc.load_pair(*map(str, llama_pair), device="cpu", one_at_a_time=True)
    one = alignloc.capture(pair, PROMPTS, out=tmp_path / "b", sites="resid_post,mlp_out", batch_size=5, release=True)
    assert [c["files"] for c in both.manifest["chunks"]] == [c["files"] for c in one.manifest["chunks"]]
    assert pair.base.resident and not pair.tuned.resident  # the resident tuned side ran first, then was released


def test_grafting_exchanges_storage_and_restores(llama_pair):
    pair = alignloc.load_pair(*map(str, llama_pair), device="cpu")
    b = dict(pair.base.model.named_parameters())
    t = dict(pair.tuned.model.named_parameters())
    name = "model.layers.1.mlp.up_proj.weight"
    b0, t0 = b[name].detach().clone(), t[name].detach().clone()
    ptr = t[name].data_ptr()
    with grafted(pair.base, pair.tuned, [1]):
        assert b[name].data_ptr() == ptr and torch.equal(b[name], t0)  # the tuned storage itself: no copy
    assert torch.equal(b[name], b0) and torch.equal(t[name], t0) and t[name].data_ptr() == ptr
    with pytest.raises(RuntimeError, match="boom"), swapped(pair.base, pair.tuned, [name]):
        raise RuntimeError("boom")
    assert torch.equal(b[name], b0) and torch.equal(t[name], t0)


def _spearman(a: list[float], b: list[float]) -> float:
    ra, rb = (torch.tensor(x).argsort(stable=True).argsort(stable=True).float() for x in (a, b))
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


@pytest.fixture(scope="module")
def sft_upper():
    """The zoo root with chat-sft-upper built (only that organism: cheaper than the whole tiny zoo)."""
    yield from tiny_zoo_with(["chat-sft-upper"])


def test_bfloat16_layer_diff_agrees_with_float32(sft_upper, tmp_path):
    """Stated tolerance: per-layer shift (relative L2) and lens KL rank the layers alike (Spearman >= 0.9)
    and differ by at most 2% (shift) and 5% (lens KL) of the largest layer's value; the verdict names
    the same layers. Measured: 0.01% and 0.15%, Spearman 1.0, layers [2, 3] both."""
    from alignloc import zoo

    name = "chat-sft-upper"
    prompts = zoo.organism_prompts(name)[:48]
    out = {}
    for dtype in ("float32", "bfloat16"):
        pair = alignloc.load_pair(f"zoo:{name}", device="cpu", compute_dtype=dtype)
        assert pair.base.provenance()["dtype"] == dtype
        out[dtype] = layer_diff(pair, prompts, tmp_path / dtype, n_boot=50, probes=False, write=False)
    m32, m16 = out["float32"]["measures"], out["bfloat16"]["measures"]
    for path, tol in ((("shift", "relative_l2"), 0.02), (("lens", "kl"), 0.05)):
        a, b = (m[path[0]][path[1]]["mean"] for m in (m32, m16))
        assert _spearman(a, b) >= 0.9, (path, a, b)
        top = max(abs(x) for x in a)
        assert max(abs(x - y) for x, y in zip(a, b, strict=True)) <= tol * top, (path, a, b)
    layers = out["float32"]["verdict"]["behavior"]["layers"]
    assert layers and layers == out["bfloat16"]["verdict"]["behavior"]["layers"]
