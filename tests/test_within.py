"""Within-model (clean vs corrupt_text) patching, the metrics, and within-model attribution."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from alignloc.analyses.outputs import full_target_logprobs
from alignloc.causal.attribution import within_attribution_sweep
from alignloc.causal.metrics import resolve_metric, scored_batch
from alignloc.causal.patching import patch_sweep, within_sweep
from alignloc.models.hooks import count_hooks, edit, run_recording
from alignloc.models.pair import load_pair
from alignloc.sites import Site
from alignloc.zoo import organism_prompts


def city_facts(name: str, n: int = 16) -> list:
    """Template-0 city cloze prompts (``Nafi lives in``): one shape, so positions line up."""
    return [p for p in organism_prompts(name) if p.id.startswith("k-") and p.meta["attribute"] == "city"][:n]


@pytest.fixture(scope="module")
def base_pair(zoo_tiny):
    return load_pair("zoo:fact-edit-L1")


def test_within_model_patching_is_exact_at_the_ends(base_pair):
    """resid_pre.0 differs only at the subject token, the last resid_post only matters at the last token."""
    prompts = city_facts("fact-edit-L1")
    assert all(p.foil for p in prompts)
    first = within_sweep(base_pair, prompts, kind="resid_pre", layers=[0], positions="each")
    assert first["metric"] == "logit_diff" and first["gap"] > 1.0  # clean answer beats the corrupt entity's
    subject = [j for j, t in enumerate(first["tokens"]) if t == "*"]  # the only token that varies
    assert len(subject) == 1
    for j, r in enumerate(first["recovered"][0]):
        assert r == pytest.approx(1.0 if j in subject else 0.0, abs=1e-4)
    top = base_pair.n_layers - 1
    last = within_sweep(base_pair, prompts, kind="resid_post", layers=[top], positions="each")
    assert last["recovered"][0][-1] == pytest.approx(1.0, abs=1e-4)
    assert all(abs(r) < 1e-4 for r in last["recovered"][0][:-1])


def test_within_sweep_equals_one_forward_per_cell(base_pair):
    prompts = city_facts("fact-edit-L1", 8)
    tok, model = base_pair.tokenizer, base_pair.tuned
    got = within_sweep(base_pair, prompts, side="tuned", kind="mlp_out", positions="all", metric="logprob")
    clean = scored_batch(tok, prompts, True, None)
    bad = scored_batch(tok, prompts, True, None, text="corrupt_text", like=clean)
    for layer in range(base_pair.n_layers):
        site = Site(layer, "mlp_out")
        donor = run_recording(model.model, model.family, [site], clean.ids, clean.mask, stop=False)[site]
        with torch.no_grad(), edit(model.model, model.family, site, lambda a, d=donor: d.clone()):
            logits = model.model(input_ids=bad.ids, attention_mask=bad.mask).logits
        ref = full_target_logprobs(logits, clean.ctx_lens, clean.tgt)
        assert got["patched"][layer] == pytest.approx(float(ref.mean()), abs=1e-5)
    assert got["side"] == "tuned" and got["setting"] == "within_model"
    assert count_hooks(model.model) == 0


def test_within_attribution_tracks_exact_patching(base_pair):
    prompts = city_facts("fact-edit-L1")
    exact, approx = [], []
    for kind in ("resid_pre", "mlp_out"):
        e = within_sweep(base_pair, prompts, kind=kind, positions="each")
        a = within_attribution_sweep(base_pair, prompts, kind=kind)
        assert a["offsets"] == e["offsets"] and a["gap"] == pytest.approx(e["gap"], rel=1e-4)
        exact += sum(e["recovered"], [])
        approx += sum(a["by_position"], [])
    r = torch.corrcoef(torch.tensor([exact, approx]))[0, 1]
    assert r > 0.8


def test_kl_metric_is_zero_for_the_donor(zoo_tiny):
    pair = load_pair("zoo:refusal-lora-L2")
    prompts = [p for p in organism_prompts("refusal-lora-L2") if p.kind == "behavior"][:12]
    r = patch_sweep(pair, prompts, kind="resid_post", metric="kl")
    assert r["donor"] == pytest.approx(0.0, abs=1e-6) and r["recipient"] < -0.1
    assert r["recovered"][pair.n_layers - 1] == pytest.approx(1.0, abs=1e-4)
    assert r["recovered"][0] == pytest.approx(0.0, abs=1e-4)


def test_bad_inputs_name_the_prompt(base_pair):
    p = city_facts("fact-edit-L1", 1)[0]
    longer = dataclasses.replace(p, corrupt_text=p.corrupt_text + " of the north")
    with pytest.raises(ValueError, match=f"{p.id}.*same token length"):
        within_sweep(base_pair, [longer])
    with pytest.raises(ValueError, match="corrupt_text"):
        within_sweep(base_pair, [dataclasses.replace(p, corrupt_text=None)])
    with pytest.raises(ValueError, match="foil"):
        resolve_metric("logit_diff", [dataclasses.replace(p, foil=None)])
    assert resolve_metric("auto", [dataclasses.replace(p, foil=None)]) == "logprob"
