"""The hard tier: behavior planted in known layers under a drift of every layer, where the weight-diff
baseline fails; functional localization (graft windows, the learned mask, patching) and verdict v2."""

from __future__ import annotations

import json

import pytest
import torch

from alignloc.analyses.verdict import VerdictConfig, functional_block
from alignloc.causal.graft import carrier_window, window_sizes
from alignloc.causal.localize import moved_prompts
from alignloc.cli import main
from alignloc.prompts import Prompt
from alignloc.report.markdown import fmt
from alignloc.zoo import HARD_ORGANISMS
from alignloc.zoo.drift import FACTORS, rescale

BEHAVIOR = {"chat-sft-upper-drift": "format_rate", "chat-sft-lower-drift": "format_rate",
            "refusal-lora-L1-drift": "refusal_rate_on_topic", "refusal-lora-L2-drift": "refusal_rate_on_topic",
            "fact-edit-L1-drift": "edit_success"}


def test_the_reparametrization_keeps_every_block_s_function(zoo_tiny):
    """q*c, k/c; v*c, o/c; up*c, down/c in every block: the same logits (and the weights far away)."""
    from alignloc.zoo.evaluate import load

    model, _ = load(zoo_tiny / "tiny" / "base" / "model")
    ids = torch.tensor([[1, 5, 9, 13, 20, 7, 3]])
    with torch.no_grad():
        before = model(input_ids=ids).logits
        state = {k: v.clone() for k, v in model.state_dict().items()}
        moved = state
        for layer in range(model.config.num_hidden_layers):
            moved = rescale(moved, layer, (FACTORS[-1], 1 / FACTORS[3], FACTORS[5]), "llama")
        model.load_state_dict(moved)
        after = model(input_ids=ids).logits
    assert torch.allclose(before, after, atol=2e-4), (before - after).abs().max()
    far = sum(float((moved[k] - state[k]).pow(2).sum()) for k in state) / sum(float(v.pow(2).sum()) for v in state.values())
    assert far > 1.0, "the weights moved by more than their own norm"


@pytest.mark.parametrize("name", HARD_ORGANISMS)
def test_hard_organisms_are_hard_and_keep_their_behavior(zoo_tiny, name):
    gt = json.loads((zoo_tiny / "tiny" / name / "ground_truth.json").read_text())
    d, m = gt["extra"]["drift"], gt["measured"]
    planted = gt["layers"]
    # the weight baseline ranks an unplanted layer first, and the drift outweighs the edit everywhere
    assert d["weight_diff_hit@1"] == 0.0 and d["weight_diff_ranking"][0] not in planted
    assert d["drift_dominates_every_layer"]
    assert all(x >= p for x, p in zip(d["drift_relative_norm"], d["planted_relative_norm"], strict=True))
    assert all(x > 0.3 for x in d["drift_relative_norm"]), "every layer moved"
    metric = BEHAVIOR[name]
    # the behavior is planted, to the organism's specification (fact-edit-L1-drift: 1.00 on the default build,
    # 0.80 with AVX2 kernels and one thread; the others 0.95-1.00), which the build checked
    assert gt["spec"]["met"] and m["tuned"][metric] >= (0.8 if metric == "edit_success" else 0.9), "the behavior is planted"
    assert m["base"][metric] == 0.0 and m["drift_only"][metric] <= 0.02, "the drift alone is behavior-neutral"
    assert (zoo_tiny / "tiny" / name / "drift" / "model.safetensors").is_file()


def test_windows_sizes_and_carrier():
    assert window_sizes(4) == [1, 2] and window_sizes(30) == [1, 2, 4, 8] and window_sizes(4, "2,1") == [1, 2]
    with pytest.raises(ValueError, match="between 1 and 4"):
        window_sizes(4, "0,5")
    sweep = {"sizes": [1, 2], "windows": {"1": {"starts": [0, 1, 2], "sufficiency": [0.1, 0.7, 0.2], "necessity": [0.0, 0.9, 0.1]},
                                          "2": {"starts": [0, 1], "sufficiency": [0.8, 0.95], "necessity": [0.9, 0.85]}}}
    assert carrier_window(sweep)["layers"] == [1, 2]
    assert carrier_window(sweep, threshold=0.65)["layers"] == [1]
    assert carrier_window(sweep, threshold=0.99) is None


def test_moved_prompts_keep_the_dominant_direction():
    ps = [Prompt(id=str(i), text="x", target=" y") for i in range(5)]
    moved = moved_prompts(ps, [0, 0, 0, 0, 0], [-3.0, -5.0, 2.5, -0.5, float("nan")])
    assert [p.id for p in moved] == ["0", "1"]


def test_small_values_print_readably():
    assert fmt(4e-4) == "4.0e-04" and fmt(-2e-5, 2) == "-2.0e-05" and fmt(2e-3) == "0.002"
    assert fmt(0.0) == "0.000" and fmt(0.1234) == "0.123" and fmt(None) == "-"


def test_functional_block_rules():
    cfg = VerdictConfig()
    loc = {"gap": 10.0, "n": 20, "carrier": {"layers": [2, 3], "size": 2, "sufficiency": 0.95, "necessity": 0.9},
           "mask": {"recovery": {"selected": {"layers": [3], "sufficiency": 0.85, "necessity": 0.9}}},
           "patching": {"mlp_out": [0.0, 0.1, 0.2, 0.9]}}
    b = functional_block("behavior", loc, lens_flags=[3], weight_flags=[0, 1], cfg=cfg, n_layers=8)
    assert b["layers"] == [3] and b["carrier"]["source"] == "mask"  # the smaller set that carries the gap wins
    assert b["named_by"]["3"] == ["graft_window", "mask", "patching", "lens"]  # weights do not corroborate it
    wide = {**loc, "carrier": {"layers": [0, 1, 2, 3, 4], "size": 5, "sufficiency": 1.0, "necessity": 1.0}, "mask": None}
    nb = functional_block("behavior", wide, [], [], cfg, n_layers=8)
    assert nb["localized"] is False and nb["layers"] == [] and "at most 4 layers" in nb["reason"]
    tiny = functional_block("behavior", {**loc, "gap": 0.2}, [], [], cfg, n_layers=8)
    assert tiny["localized"] is None and tiny["layers"] == []
    # without causal evidence: the lens, corroborated by weights that single layers out; a disagreement names nothing
    corr = functional_block("behavior", None, [2, 3], [2, 3], cfg, 8)
    assert corr["layers"] == [2, 3] and corr["localized"] is None  # where the gap shows, not what carries it
    dis = functional_block("behavior", None, [5, 6], [1, 2], cfg, 8)
    assert dis["layers"] == [] and "disagree" in dis["reason"]
    assert functional_block("behavior", None, [5, 6], list(range(8)), cfg, 8)["basis"] == "lens"


def test_localize_bench_hard_tier(zoo_tiny, tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["localize-bench", "--tiers", "hard", "--out", str(out), "--n-prompts", "24",
                 "--methods", "weight_diff,graft_window,delta_mask,graft_sufficiency,patch_mlp_out"]) == 0
    r = json.loads((out / "report.json").read_text())["tiers"]["hard"]
    m = r["methods"]
    assert set(r["organisms_scored"]) == set(HARD_ORGANISMS)
    # the weights moved in every layer of the drift-only pair: named all four without the gap gate, and on the
    # tasks where that pair's gap passes 0.5 nats (the chat prompts at 24 prompts) with it
    assert m["weight_diff"]["hit@1"] <= 0.3 and m["weight_diff"]["control_flags_ungated"] == 4.0
    assert m["weight_diff"]["control_false_positives"] >= m["graft_window"]["control_false_positives"]
    assert m["graft_window"]["hit@1"] >= 0.9 and m["graft_window"]["hit@k"] >= 0.9
    assert m["delta_mask"]["hit@1_single_layer"] == 1.0, "the mask recovers single-layer edits"
    # the mask names a set only where grafting it carries the gap as the verdict requires: nothing on the null pair.
    # The carrier window does name one: the chat task's null gap (about 0.5 nats at 24 prompts) is noise that one
    # window can carry both ways (0.67 per task on the default build), which the old flag rule (a score of
    # 2 + min(suff, nec) >= 2) never counted
    assert m["delta_mask"]["control_false_positives"] == 0.0
    fp = {k: v["control_false_positives"] for k, v in m.items()}
    assert fp["graft_window"] <= 1.0 and fp["graft_sufficiency"] <= 2.0 and fp["patch_mlp_out"] <= 2.0, fp
    assert "## hard tier" in capsys.readouterr().out


def test_verdict_v2_on_a_drift_organism_and_a_full_finetune(zoo_tiny, tmp_path, capsys):
    out = tmp_path / "drift"
    assert main(["layer-diff", "zoo:chat-sft-upper-drift", "--out", str(out), "--n-boot", "100", "--no-probes",
                 "--causal"]) == 0
    rep = json.loads((out / "report.json").read_text())
    v = rep["verdict"]
    assert rep["schema_version"] == 2 and "functional evidence" in rep["schema_notes"]
    assert rep["control"]["model"]["zoo"] == "chat-sft-upper-drift:drift", "its own drift-only model is the control"
    assert v["behavior_layers"] == [2, 3] and v["behavior"]["basis"] == "causal"
    for layer in ("2", "3"):
        assert {"graft_window", "mask"} <= set(v["behavior"]["named_by"][layer])
        assert "weights" not in v["behavior"]["named_by"][layer], "the drift outweighs the edit in the weights"
    c = v["behavior"]["carrier"]
    assert min(c["sufficiency"], c["necessity"]) >= 0.8 and v["grades"]["behavior"] == "localized"
    # the profile: one planted layer alone is not necessary (0.27-0.76 over three builds), both are (>= 0.99)
    prof = rep["causal"]["localize"]["behavior"]["profile"]
    assert prof["sets"][1] == [2, 3] and prof["k_necessary"]["0.8"] == 2 and prof["necessity"]["lo"][1] >= 0.8
    assert prof["necessity"]["mean"][0] < 0.8 and prof["sufficiency"]["lo"][0] < prof["sufficiency"]["mean"][0]
    # against its drift-only control (the part of the gap the drift does not share), the same planted layers
    assert v["behavior_layers_vs_control"] == [2, 3] and any(s.startswith("against the control") for s in v["summary"])
    full = tmp_path / "full"
    assert main(["layer-diff", "zoo:chat-sft-full", "--out", str(full), "--n-boot", "100", "--no-probes", "--causal",
                 "--mask-steps", "60"]) == 0
    rep_full = json.loads((full / "report.json").read_text())
    fv = rep_full["verdict"]
    fb, fp = fv["behavior"], rep_full["causal"]["localize"]["behavior"]["profile"]
    # every layer trained; the tuned model gives its format > 0.99 probability, so necessity is read on the logit
    # difference. Layer 0 carries most of it on every build (alone: sufficiency 0.63-0.92, necessity 0.78-0.84),
    # and the grade sits at the border: localized at [0, 3] or [0], or distributed (three builds); never on weights
    assert fp["saturated"] and fp["metric"] == "logprob+logit_diff" and fp["tuned_target_probability"] > 0.99
    assert fp["ranking"][0] == 0 and min(fp["sufficiency"]["mean"][0], fp["necessity"]["mean"][0]) >= 0.6
    assert fb["grade"] in ("localized", "distributed") and (fb["layers"] == [] or 0 in fb["layers"])
    assert fv["behavior_layers"] == fb["layers"]
    # its control, control-continued, is trained on its own (not this organism's training without the edit):
    # it sets the floors, and no second localization is run against it
    assert rep_full["control"]["model"]["zoo"] == "control-continued:tuned"
    assert "versus_control" not in rep_full["causal"] and fv["behavior_layers_vs_control"] is None
    for verdict in (v, fv):  # no layer is ever named on weights alone
        for kind in ("behavior", "knowledge"):
            for srcs in ((verdict.get(kind) or {}).get("named_by") or {}).values():
                assert set(srcs) - {"weights"}, srcs
    assert "basis: causal" in (full / "summary.md").read_text()


@pytest.fixture(scope="module")
def natural_zoo():
    """The test zoo with one organism of the natural hard tier (and control-drift, which it is trained on)."""
    from tests.conftest import tiny_zoo_with

    yield from tiny_zoo_with(["refusal-lora-L1-natural"])


def test_a_natural_organism_is_trained_on_the_drift_and_found_by_grafting(natural_zoo):
    """refusal-lora-L1-natural: the LoRA recipe trained on top of control-drift (no rescaling, no mixture): the
    weight-diff ranking is recorded as it comes out, the drift-only twin is the exact null pair, and the graft
    window names the planted layer."""
    from alignloc.causal.bench import METHODS
    from alignloc.models.pair import load_pair
    from alignloc.prompts import load_prompts

    root = natural_zoo / "tiny" / "refusal-lora-L1-natural"
    gt = json.loads((root / "ground_truth.json").read_text())
    nat, m = gt["extra"]["natural"], gt["measured"]
    assert gt["layers"] == [1] and nat["planted_layers"] == [1] and gt["spec"]["met"]
    assert sorted(nat["weight_diff_ranking"]) == [0, 1, 2, 3]
    assert nat["weight_diff_hit@1"] == float(nat["weight_diff_ranking"][0] == 1)  # as it comes out: 1.0 on the
    # default build, where the trained LoRA (1.44 of its layer's norm) outweighs the drift (0.42-0.60) in every layer
    assert all(x > 0.0 for x in nat["drift_relative_norm"]), "the drift moved every layer"
    assert [p for i, p in enumerate(nat["planted_relative_norm"]) if i != 1] == [0.0, 0.0, 0.0], "only layer 1 trained"
    assert m["tuned"]["refusal_rate_on_topic"] >= 0.9 and m["drift_only"]["refusal_rate_on_topic"] <= 0.02
    assert (root / "drift" / "model.safetensors").is_file() and not (root / "adapter").exists()
    pair = load_pair(str(root / "base"), str(root / "tuned"))
    prompts = [p for p in load_prompts(root / gt["behavior"]["prompts"]) if p.target][:24]
    scores, gap, named = METHODS["graft_window"](pair, prompts, True)
    assert gap > 1.0 and named == [1], (scores, gap, named)
