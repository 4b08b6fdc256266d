"""Weight grafting on the organisms: the planted layer is sufficient and necessary, others are not."""

from __future__ import annotations

import pytest
import torch

from alignloc.analyses.outputs import target_logprobs
from alignloc.causal.graft import graft_params, graft_sweep, grafted
from alignloc.models.pair import load_pair, state_dict_hash
from alignloc.zoo import organism_prompts


def behavior_metric(prompts):
    beh = [p for p in prompts if p.kind == "behavior"]
    return lambda m: float(target_logprobs(m, beh, bos=True).nanmean())


@pytest.mark.parametrize("name", ["refusal-lora-L1", "refusal-lora-L2"])
def test_grafting_the_planted_layer_restores_the_refusal_gap(zoo_tiny, name):
    pair = load_pair(f"zoo:{name}")
    k = pair.ground_truth["layers"][0]
    before = (state_dict_hash(pair.base.model.state_dict()), state_dict_hash(pair.tuned.model.state_dict()))
    r = graft_sweep(pair, behavior_metric(organism_prompts(name)))
    assert r["gap"] > 1.0, "the tuned model prefers the refusal/answer targets"
    assert r["sufficiency"][k] >= 0.7 and r["necessity"][k] >= 0.7
    others = [i for i in r["layers"] if i != k]
    assert all(abs(r["sufficiency"][i]) < 0.05 and abs(r["necessity"][i]) < 0.05 for i in others)
    after = (state_dict_hash(pair.base.model.state_dict()), state_dict_hash(pair.tuned.model.state_dict()))
    assert after == before, "every graft is undone"


def test_two_layer_sft_needs_both_layers(zoo_tiny):
    """chat-sft-upper trained layers 2 and 3 together: grafting either one alone is measured, and
    grafting both recovers the whole gap exactly (layers 0-1 and the rest are identical)."""
    pair = load_pair("zoo:chat-sft-upper")
    metric = behavior_metric(organism_prompts("chat-sft-upper"))
    r = graft_sweep(pair, metric)
    assert r["sufficiency"][0] == r["sufficiency"][1] == 0.0
    # neither trained layer carries the behavior alone (three builds: sufficiency 0.40-0.78, necessity 0.22-0.60
    # for the better one), each brings part of it
    assert min(r["sufficiency"][2], r["sufficiency"][3]) > 0.2 and max(r["sufficiency"][2], r["sufficiency"][3]) < 0.9
    assert max(r["necessity"][2], r["necessity"][3]) < 0.7
    with grafted(pair.base, pair.tuned, [2, 3]) as m:
        assert metric(m) == pytest.approx(r["tuned"], abs=1e-4)


def test_graft_modules_and_restore_on_error(llama_pair):
    pair = load_pair(str(llama_pair[0]), str(llama_pair[1]))
    names = graft_params(pair.base, [1], ("mlp",))
    assert names and all(".layers.1.mlp." in n for n in names)
    w = dict(pair.base.model.named_parameters())[names[0]].detach().clone()
    with pytest.raises(RuntimeError, match="boom"), grafted(pair.base, pair.tuned, [1], ("mlp",)):
        assert not torch.equal(dict(pair.base.model.named_parameters())[names[0]], w)
        raise RuntimeError("boom")
    assert torch.equal(dict(pair.base.model.named_parameters())[names[0]], w)
    with pytest.raises(ValueError, match="no parameters"):
        graft_params(pair.base, [99])


def test_resumed_windows_equal_the_full_forwards(zoo_tiny):
    """A window grafted at block i starts there from the recipient's recorded residual: the same numbers as full
    forwards (to 1e-5 of the gap), every window and both ways."""
    from alignloc.causal.graft import carrier_window, target_metric, window_sweep
    from alignloc.causal.resumed import ResumedScorer

    pair = load_pair("zoo:chat-sft-lower-drift")  # every layer moved: no window is trivially 0
    prompts = [p for p in organism_prompts("chat-sft-lower-drift") if p.kind == "behavior"][:24]
    metric = target_metric(prompts, None, True)
    full = window_sweep(pair, metric, [1, 2])
    scorers = (ResumedScorer(pair.base, prompts, True, 8), ResumedScorer(pair.tuned, prompts, True, 8))
    fast = window_sweep(pair, metric, [1, 2], resumed=scorers)
    assert full["engine"] == "full" and fast["engine"] == "resumed" and all(s.exact for s in scorers)
    for w in ("1", "2"):
        for key in ("sufficiency", "necessity"):
            assert fast["windows"][w][key] == pytest.approx(full["windows"][w][key], abs=1e-5), (w, key)
    assert scorers[0].mean(0) == pytest.approx(full["base"], abs=1e-5)
    assert scorers[0].mean(2) == pytest.approx(full["base"], abs=1e-5)  # resumed, ungrafted: the model itself
    # triaged: a window of 2 is reverted only where it brings half the gap; the rest of the numbers are the same
    tri = window_sweep(pair, metric, [1, 2], resumed=scorers, necessity_at=0.5)
    n = pair.n_layers
    assert tri["windows"]["1"]["necessity"] == pytest.approx(full["windows"]["1"]["necessity"], abs=1e-5)
    suff, nec = full["windows"]["2"]["sufficiency"], full["windows"]["2"]["necessity"]
    wide = [i for i, s in enumerate(suff) if s >= 0.5]
    assert 0 < len(wide) < n - 1 and tri["confirmed"] == len(wide), suff  # both cases occur
    for i, got in enumerate(tri["windows"]["2"]["necessity"]):
        assert (got == pytest.approx(nec[i], abs=1e-5)) if i in wide else got is None, (i, got)
    assert tri["windows"]["2"]["sufficiency"] == pytest.approx(suff, abs=1e-5)
    assert tri["passes"] == 2 + (2 * n - 1) + n + len(wide) < full["passes"]
    assert carrier_window(tri) == carrier_window(full) is not None


def test_resumed_profile_equals_the_full_forwards(zoo_tiny):
    """The concentration profile scored from each set's lowest layer with the windows' scorers: the same profile,
    on the log-prob and (this organism saturates) on the logit difference to the base's own next token."""
    from alignloc.causal.metrics import pack
    from alignloc.causal.profile import concentration_profile
    from alignloc.causal.resumed import ResumedScorer
    from alignloc.models.families import get_module

    pair = load_pair("zoo:chat-sft-full")
    prompts = [p for p in organism_prompts("chat-sft-full") if p.kind == "behavior"][:16]
    ranking = [3, 1, 2, 0]
    full = concentration_profile(pair, prompts, True, ranking, ranking_source="test", n_boot=50, batch_size=8)
    scorers = (ResumedScorer(pair.base, prompts, True, 8), ResumedScorer(pair.tuned, prompts, True, 8))
    blocks = []  # one entry per block call of either model
    hooks = [block.register_forward_pre_hook(lambda *_: blocks.append(1)) for m in (pair.base, pair.tuned)
             for block in get_module(m.model, m.family.layers)]
    try:
        fast = concentration_profile(pair, prompts, True, ranking, ranking_source="test", n_boot=50, batch_size=8,
                                     resumed=scorers)
    finally:
        for h in hooks:
            h.remove()
    # each set enters at the layer it adds, from the previous set's graft ({3}, {1,3}, {1,2,3}, {0..3}: blocks 3, 1, 2,
    # 0), not at its lowest layer (3, 1, 1, 0): per length group, 2 full runs + 2 x (1 + 3 + 2 + 4) blocks, not 2 x 11
    groups = sum(len(pack(b.row_end.tolist(), 256)) for b in scorers[0].parts)
    assert len(blocks) == groups * (2 * 4 + 2 * 10)
    assert full["saturated"] and fast["metric"] == full["metric"] == "logprob+logit_diff"
    for prof in ("logprob_profile", "logit_diff_profile"):
        for key in ("sufficiency", "necessity"):
            for stat in ("mean", "lo", "hi"):
                assert fast[prof][key][stat] == pytest.approx(full[prof][key][stat], abs=1e-5), (prof, key, stat)
    # stopped at k = 2 (``max_k``, as the standard budget stops at half the layers): the whole profile's first two sets
    capped = concentration_profile(pair, prompts, True, ranking, ranking_source="test", n_boot=50, batch_size=8,
                                   resumed=scorers, max_k=2)
    assert capped["sets"] == full["sets"][:2] == [[3], [1, 3]] and capped["passes"] == 2 + 2 * 2 and capped["max_k"] == 2
    for prof in ("logprob_profile", "logit_diff_profile"):
        for key in ("sufficiency", "necessity"):
            for stat in ("mean", "lo", "hi"):
                assert capped[prof][key][stat] == pytest.approx(full[prof][key][stat][:2], abs=1e-5), (prof, key, stat)
        for key in ("k_sufficient", "k_necessary"):  # a level reached within two sets keeps its k; the others None
            assert capped[prof][key] == {q: k if k is not None and k <= 2 else None for q, k in full[prof][key].items()}
    with pytest.raises(ValueError, match="other prompts"):
        concentration_profile(pair, prompts[:8], True, ranking, ranking_source="test", resumed=scorers)


def test_saturated_profile_reads_both_metrics_off_one_forward_per_graft(zoo_tiny):
    """A saturated profile reads the log-prob and the logit difference off the same forwards (2 + 2k passes, not
    twice that), and its logit-difference gap is the one computed directly (the base's own next token as foil)."""
    from alignloc.causal.metrics import score, scored_batch, scored_logits
    from alignloc.causal.profile import base_foils, concentration_profile
    from alignloc.models.families import get_module

    pair = load_pair("zoo:chat-sft-full")
    prompts = [p for p in organism_prompts("chat-sft-full") if p.kind == "behavior"][:16]
    calls = []
    hooks = [get_module(m.model, m.family.final_norm).register_forward_hook(lambda *_: calls.append(1))
             for m in (pair.base, pair.tuned)]
    try:
        prof = concentration_profile(pair, prompts, True, [3, 1, 2, 0], ranking_source="test", n_boot=50, batch_size=16)
    finally:
        for h in hooks:
            h.remove()
    assert prof["saturated"] and prof["passes"] == 2 + 2 * 4
    assert len(calls) == prof["passes"]  # one batch of 16 prompts, one forward per pass (a single length group)
    b = scored_batch(pair.tokenizer, prompts, True, pair.base.max_len)
    foiled = base_foils(b, scored_logits(pair.base, b))
    gap = score(scored_logits(pair.tuned, b), foiled, "logit_diff") - score(scored_logits(pair.base, b), foiled, "logit_diff")
    assert prof["logit_diff_profile"]["gap"] == pytest.approx(float(gap.detach().mean()), abs=1e-4)
    assert prof["logprob_profile"]["gap"] != pytest.approx(prof["logit_diff_profile"]["gap"], abs=1e-3)


def test_resumed_mask_samples_equal_the_full_forwards(zoo_tiny):
    """Each sampled mask's forward starts at its lowest grafted block from the base's recorded run: the same losses,
    hence the same gates, as full forwards (and fewer blocks computed)."""
    from alignloc.causal.mask import DeltaMask

    pair = load_pair("zoo:refusal-lora-L2")
    prompts = [p for p in organism_prompts("refusal-lora-L2") if p.kind == "behavior"][:32]
    fast = DeltaMask(steps=25, batch_size=16).fit(pair, prompts, True)
    full = DeltaMask(steps=25, batch_size=16, resume=False).fit(pair, prompts, True)
    assert full.passes_["blocks_computed"] == 1.0 and fast.passes_["blocks_computed"] < 0.9
    assert fast.history_ == pytest.approx(full.history_, abs=1e-5)
    assert fast.gates_.tolist() == pytest.approx(full.gates_.tolist(), abs=1e-5) and fast.ranking_ == full.ranking_
    assert fast.kl_scale_ == pytest.approx(full.kl_scale_, rel=1e-5)


def test_stacked_mask_samples_equal_one_forward_each(zoo_tiny, monkeypatch):
    """A step's sampled masks share one forward (each row its own mix of base and tuned blocks, ``causal.mixed``):
    the same losses and gates as one forward per mask, and no step fell back to one forward each. The stacked
    forward groups its rows by length at its own fixed cost per call (``MIXED_OVERHEAD``)."""
    from alignloc.causal import mixed
    from alignloc.causal.mask import DeltaMask

    pair = load_pair("zoo:refusal-lora-L2")
    prompts = [p for p in organism_prompts("refusal-lora-L2") if p.kind == "behavior"][:32]
    overheads: list[float] = []
    grouped = mixed.in_length_groups
    monkeypatch.setattr(mixed, "in_length_groups", lambda *a, **k: (overheads.append(k.get("overhead")), grouped(*a, **k))[1])
    stacked = DeltaMask(steps=25, batch_size=16).fit(pair, prompts, True)
    assert overheads and set(overheads) == {mixed.MIXED_OVERHEAD}
    alone = DeltaMask(steps=25, batch_size=16, stack=False).fit(pair, prompts, True)
    assert stacked.passes_["stacked_forwards"] > 0 == alone.passes_["stacked_forwards"]
    assert not stacked.passes_["stack_fallback"]  # the one-time check agreed: no step fell back to one forward each
    assert stacked.history_ == pytest.approx(alone.history_, abs=1e-5)
    assert stacked.gates_.tolist() == pytest.approx(alone.gates_.tolist(), abs=1e-5)
    assert stacked.ranking_ == alone.ranking_


def test_mask_bits_on_units_that_did_not_move_are_computed_as_off(zoo_tiny):
    """On a LoRA organism only the adapted layer's weights moved: a sampled mask is computed on that unit's bit alone
    (the same model whatever the others' bits), so two batches hold at most four distinct masks, with the same
    losses and gates as computing every bit."""
    from alignloc.causal.mask import DeltaMask

    pair = load_pair("zoo:refusal-lora-L2")
    prompts = [p for p in organism_prompts("refusal-lora-L2") if p.kind == "behavior"][:32]
    moved = DeltaMask(steps=40, batch_size=16).fit(pair, prompts, True)
    every = DeltaMask(steps=40, batch_size=16, moved_only=False).fit(pair, prompts, True)
    assert moved.moved_units_ == ["L2"] and len(every.moved_units_) == len(every.units_) > 1
    assert moved.passes_["distinct_samples"] <= 4 < every.passes_["distinct_samples"]
    assert moved.history_ == pytest.approx(every.history_, abs=1e-5)
    assert moved.gates_.tolist() == pytest.approx(every.gates_.tolist(), abs=1e-5) and moved.ranking_ == every.ranking_


def test_mask_samples_drawn_again_take_their_earlier_loss(zoo_tiny):
    """A mask drawn again on the same batch is not rerun: the same losses and gates as rerunning every draw (two
    batches, so a loss reused from the other batch would show), with most draws reused on this 4-layer organism."""
    from alignloc.causal.mask import DeltaMask

    pair = load_pair("zoo:refusal-lora-L2")
    prompts = [p for p in organism_prompts("refusal-lora-L2") if p.kind == "behavior"][:32]
    reused = DeltaMask(steps=40, batch_size=16).fit(pair, prompts, True)
    rerun = DeltaMask(steps=40, batch_size=16, reuse=False).fit(pair, prompts, True)
    assert rerun.passes_["reused_samples"] == 0 and reused.passes_["reused_samples"] > reused.passes_["distinct_samples"]
    assert reused.passes_["distinct_samples"] + reused.passes_["reused_samples"] <= 40 * 4
    assert reused.history_ == pytest.approx(rerun.history_, abs=1e-5)
    assert reused.gates_.tolist() == pytest.approx(rerun.gates_.tolist(), abs=1e-5) and reused.ranking_ == rerun.ranking_
