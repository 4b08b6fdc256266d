"""localize-bench: each method's hit@1 against the planted layers, and the control's false positives."""

from __future__ import annotations

import json
import math

import pytest

from alignloc.causal.bench import chance, flagged, hits, mean_ci, rank_layers, tie_groups
from alignloc.cli import main


def test_ranking_and_hits():
    assert rank_layers([0.1, math.nan, 0.9, 0.9]) == [2, 3, 0, 1]
    assert hits([2, 3, 0, 1], [3]) == (0.0, 0.0)
    assert hits([2, 3, 0, 1], [3, 2]) == (1.0, 1.0)
    assert hits([2, 0, 3, 1], [3, 2]) == (1.0, 0.5)
    # ties favor no index: a tie of layers 2 and 3 at the top is half a hit for either
    scores = [0.1, math.nan, 0.9, 0.9]
    ranking = rank_layers(scores)
    assert tie_groups(ranking, scores) == [[2, 3], [0], [1]]
    assert hits(ranking, [3], tie_groups(ranking, scores)) == (0.5, 0.5)
    assert hits(ranking, [2], tie_groups(ranking, scores)) == (0.5, 0.5)
    assert hits(rank_layers([0.0] * 4), [1, 3], tie_groups(rank_layers([0.0] * 4), [0.0] * 4)) == (0.5, 0.5)
    # the named layers first, whatever their score (a carrier layer with a negative single-layer score)
    assert rank_layers([0.5, -0.2, 0.1], first=[1]) == [1, 0, 2]


def test_false_positives_are_counted_alike():
    """One minimum gap for every method; above it, the named layers (even at a negative score), the layers
    recovering flag_at, or for the weights the layers above the weight floor."""
    assert flagged("patch_mlp_out", [0.9, 0.1], gap=0.2, min_gap=0.5, flag_at=0.5) == []  # no gap: nothing to find
    assert flagged("weight_diff", [0.0, 1e-4], gap=0.2, min_gap=0.5, flag_at=0.5) == []  # the weights alike
    assert flagged("patch_mlp_out", [0.9, 0.1], gap=-3.0, min_gap=0.5, flag_at=0.5) == [0]
    assert flagged("weight_diff", [0.0, 1e-4], gap=-3.0, min_gap=0.5, flag_at=0.5) == [1]
    assert flagged("graft_window", [-0.3, 0.1], gap=2.0, min_gap=0.5, flag_at=0.5, named=[0]) == [0]
    assert flagged("weight_diff", [0.1, 0.2], gap=math.nan, min_gap=0.5, flag_at=0.5) == []
    c = chance({"a": {"planted": [2, 3]}, "b": {"planted": [1]}, "c": {"planted": [1]}}, 4)
    assert c["constant_layer"] == 1 and c["constant_hit@1"] == pytest.approx(2 / 3)
    assert c["random_hit@1"] == pytest.approx((2 / 4 + 1 / 4 + 1 / 4) / 3)
    m, lo, hi = mean_ci([1.0, 1.0, 0.0, 1.0])
    assert m == 0.75 and 0.0 <= lo < 0.75 < hi <= 1.0


def test_localize_bench_on_the_tiny_zoo(zoo_tiny, tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["localize-bench", "--tiers", "easy", "--out", str(out), "--n-prompts", "24"]) == 0
    printed = capsys.readouterr().out
    r = json.loads((out / "report.json").read_text())["tiers"]["easy"]
    assert set(r["organisms_scored"]) == {"chat-sft-upper", "chat-sft-lower", "refusal-lora-L1", "refusal-lora-L2", "fact-edit-L1"}
    assert set(r["skipped"]) == {"chat-sft-full", "dpo-polite"}
    assert set(r["single_layer_organisms"]) == {"refusal-lora-L1", "refusal-lora-L2", "fact-edit-L1"}
    m = r["methods"]
    assert all("hit@1" in s for s in m.values())
    assert max(s["hit@1_single_layer"] for s in m.values()) >= 0.9
    for causal in ("graft_sufficiency", "graft_necessity", "patch_mlp_out", "attribution_mlp_out", "graft_window",
                   "delta_mask"):
        assert m[causal]["hit@1_single_layer"] == 1.0
        assert m[causal]["control_false_positives"] == 0.0
    # weights moved in every layer of the null pair: without the gap gate that every method shares, the weight
    # baseline would name all four layers; with it (the null pair's gaps are below 0.5 nats), none
    assert m["weight_diff"]["control_flags_ungated"] == 4.0 and m["weight_diff"]["control_false_positives"] == 0.0
    assert r["chance"]["constant_layer"] == 1 and r["chance"]["constant_hit@1"] == pytest.approx(0.6)
    assert r["chance"]["random_hit@1"] == pytest.approx(0.35)
    assert "| random ranking (expected) | 0.35 |" in printed
    # in chat-sft-lower both trained layers are found, and grafting says layer 0 carries the format
    lower = r["organisms"]["chat-sft-lower"]["methods"]
    assert lower["graft_sufficiency"]["ranking"][0] == 0 and lower["graft_sufficiency"]["hit@k"] == 1.0
    assert "| patch_mlp_out | 1.00 [1.00, 1.00] |" in printed and (out / "summary.md").read_text() in printed + "\n"
    # --json: the same result as JSON on stdout (the files are written as well); a rerun replaces alignloc's own files
    assert main(["localize-bench", "--tiers", "easy", "--out", str(out), "--n-prompts", "24", "--methods", "weight_diff",
                 "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((out / "report.json").read_text()) and printed["methods_run"] == ["weight_diff"]


def test_unknown_method_is_a_clear_error(capsys):
    assert main(["localize-bench", "--methods", "nope"]) == 2
    err = capsys.readouterr().err
    assert "--methods" in err and "nope" in err and "patch_mlp_out" in err
    assert main(["localize-bench", "--seeds", "4"]) == 2  # tiny has three seeds
    assert "alignloc: error: --seeds 4: size 'tiny' has 3 seed(s) (tiny, tiny-s1, tiny-s2)" in capsys.readouterr().err


def test_seed_variants_are_the_same_recipes_in_another_world_and_training_seed():
    from alignloc.zoo.config import SIZES, seeded_sizes

    assert seeded_sizes("tiny", 3) == ["tiny", "tiny-s1", "tiny-s2"] and seeded_sizes("small", 1) == ["small"]
    tiny, s2 = SIZES["tiny"], SIZES["tiny-s2"]
    assert (s2.seed, s2.world.seed) == (2, 2) and (tiny.seed, tiny.world.seed) == (0, 0)
    assert (s2.base, s2.large, s2.recipes, s2.drift) == (tiny.base, tiny.large, tiny.recipes, tiny.drift)
    assert s2.fingerprint() != tiny.fingerprint()  # built apart, never served from each other's cache


def test_localize_bench_result_round_trips(zoo_tiny):
    """A small real run (the weight baseline on the easy tier): the typed result is the report.json dict,
    written and read back; another schema version is refused; a report from before the version was recorded
    (no schema_version, the same keys otherwise) reads as version 1."""
    from alignloc.experiments.localize_bench import localize_bench
    from alignloc.report import json_safe
    from alignloc.report.results import LocalizeBenchResult, ResultSchemaError

    r = localize_bench(n_prompts=4, methods=["weight_diff"], tiers=["easy"])
    assert isinstance(r, LocalizeBenchResult) and r.tiers["easy"] is r["tiers"]["easy"]
    # without tiers: those of the default zoo build (the notebook and `alignloc figures` call it so, and the
    # natural tiers would build twelve more organisms)
    assert set(localize_bench(n_prompts=4, methods=["weight_diff"]).tiers) == {"easy", "hard"}
    assert LocalizeBenchResult.from_json(r.to_json()) == r
    data = json.loads(json.dumps(json_safe(r)))
    assert list(data)[:2] == ["schema_version", "size"] and LocalizeBenchResult.from_json(data).to_json() == data
    assert data["seeds"] == ["tiny"]  # one seed: the size alone
    with pytest.raises(ResultSchemaError, match="localize-bench report has schema version 2"):
        LocalizeBenchResult.from_json({**data, "schema_version": 2})
    legacy = {k: v for k, v in data.items() if k != "schema_version"}
    assert LocalizeBenchResult.from_json(legacy).to_json() == data


def test_an_organism_that_a_seed_cannot_build_is_skipped_with_the_reason(monkeypatch):
    """A seed variant's world may not give a recipe its margin: the zoo refuses the build (its specification is
    missed with every training seed), and the benchmark scores the rest and says which and why."""
    from alignloc import zoo
    from alignloc.experiments import localize_bench as lb

    class Entry:
        ground_truth = {"layers": [2], "n_layers": 8}

    def resolve(name, size):
        if name == "fact-edit-L3-natural-large":
            raise zoo.ZooError(f"zoo artifact {name!r} (size {size}) missed its specification with each of 3 seeds")
        return Entry()

    monkeypatch.setattr(zoo, "resolve", resolve)
    keep, skipped = lb.scored_organisms("tiny-s1", "natural-large")
    assert "fact-edit-L3-natural-large" not in keep and len(keep) == 4
    assert skipped == {"fact-edit-L3-natural-large": "not built: zoo artifact 'fact-edit-L3-natural-large' (size "
                                                     "tiny-s1) missed its specification with each of 3 seeds"}
