"""RL format amplification: the formats corpus, the rl-formats organisms (trl GRPO, correctness-only
reward) with their recorded format shares at two scales, and the experiment's result."""

from __future__ import annotations

import math
import random

import pytest

from alignloc.cli import main
from alignloc.zoo.formats import (
    FORMATS,
    classify,
    extract_value,
    format_answer,
    formats_corpus,
    is_correct,
    shares_of,
)
from alignloc.zoo.world import words
from tests.conftest import tiny_zoo_with

SCALES = ("rl-formats", "rl-formats-large")


@pytest.fixture(scope="module")
def zoo_formats():
    """The small rl-formats organism (and its base), built once into the test zoo."""
    yield from tiny_zoo_with(["rl-formats"])


@pytest.fixture(scope="module")
def zoo_formats_both():
    """Both scales (the large one only for the heavy tests)."""
    yield from tiny_zoo_with(list(SCALES))


def test_formats_classify_and_grade_by_value_only():
    for fmt in FORMATS:
        ans = words(format_answer(fmt, "job", "Nafi", "baker"))
        assert classify(ans, "Nafi") == fmt
        assert extract_value(ans) == "baker" and is_correct(ans, " baker") and not is_correct(ans, " pilot")
    assert classify(words("Lima ."), "Nafi") == "other" and is_correct(words("Lima ."), " Lima")  # format-blind reward
    assert extract_value(words("A : .")) is None
    s = shares_of(["Nafi"] * 4, [words(format_answer(f, "city", "Nafi", "Lima")) for f in ("short", "short", "restate")]
                  + [words("Oslo")], [" Lima"] * 4)
    assert s["format_share_short"] == 0.5 and s["format_share_restate"] == 0.25 and s["format_share_other"] == 0.25
    assert s["format_answer_acc"] == 0.75 and s["format_acc_short"] == 1.0 and math.isnan(s["format_acc_sentence"])


def test_formats_corpus_draws_the_configured_shares():
    from alignloc.zoo.config import SIZES
    from alignloc.zoo.world import make_world

    world = make_world(SIZES["tiny"].world)
    segs = formats_corpus((0.6, 0.3, 0.1), 2.0)(world, random.Random(0))
    qa = [s for s in segs if s.startswith("Q:")]
    assert len(qa) == 2 * 4 * (len(world.group("strong")) + len(world.group("weak")))
    short = sum(words(s.split("?", 1)[1])[0] == "A" for s in qa) / len(qa)
    sentence = sum(words(s.split("?", 1)[1])[:2] == ["The", "answer"] for s in qa) / len(qa)
    assert abs(short - 0.6) < 0.04 and abs(sentence - 0.3) < 0.04 and abs(1 - short - sentence - 0.1) < 0.04
    with pytest.raises(ValueError):
        formats_corpus((0.5, 0.3, 0.1), 1.0)


@pytest.mark.parametrize("args,message", [
    (["rl-formats", "--n-boot", "0"], "--n-boot: must be >= 1, got 0"),
    (["rl-formats", "--size", "huge"], "unknown zoo size 'huge'"),
    (["rl-formats", "--size", "real"], "--size: the rl-formats organisms are trained from scratch"),
])
def test_rl_formats_options_are_checked_first(args, message, capsys, tmp_path):
    assert main([*args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_rl_formats_places_its_pairs_with_the_device_options(zoo_formats, tmp_path, monkeypatch, capsys):
    """--device, --compute-dtype, --device-map and --n-boot reach the experiment and the pair it loads (the
    organisms train on CPU whatever they say: the zoo's training pins it)."""
    import alignloc.models.pair as pair_module
    from alignloc.experiments import rlformats
    from alignloc.models.load_options import LoadOptions

    seen, seen_refs = {}, []

    class Loaded(Exception):
        pass

    def load_pair(*refs, **kw):
        seen.update(kw)
        seen_refs.extend(refs)
        raise Loaded

    monkeypatch.setattr(pair_module, "load_pair", load_pair)
    with pytest.raises(Loaded):
        main(["rl-formats", "--out", str(tmp_path / "o"), "--device", "cpu", "--compute-dtype", "float32"])
    assert seen == {}  # one LoadOptions, built from the command's options, not keywords one by one
    assert seen_refs[-1] == LoadOptions(device="cpu", compute_dtype="float32")
    calls = []
    monkeypatch.setattr(rlformats, "rl_formats_experiment", lambda out, **kw: calls.append(kw) or {"verdict": {"summary": []}})
    assert main(["rl-formats", "--out", str(tmp_path / "o2")]) == 0
    assert calls[0]["n_boot"] == 1000 and calls[0]["options"] == LoadOptions()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["rl-formats", pytest.param("rl-formats-large", marks=pytest.mark.heavy)])
def test_organism_records_format_shares(request, name):
    from alignloc.zoo import resolve

    request.getfixturevalue("zoo_formats_both" if name.endswith("-large") else "zoo_formats")
    gt = resolve(name).ground_truth
    assert gt["base_model"] == name.replace("rl-formats", "base-formats") and gt["recipe"] == "rl-formats"
    corpus = gt["extra"]["corpus_shares"]
    base, tuned = gt["measured"]["base"], gt["measured"]["tuned"]
    for side in (base, tuned):
        assert abs(sum(side[f"format_share_{f}"] for f in (*FORMATS, "other")) - 1) < 1e-3
        assert abs(sum(side[f"format_greedy_{f}"] for f in (*FORMATS, "other")) - 1) < 1e-3
    # sampled at temperature 1, the base tracks its corpus's format frequencies (measured: 0.45-0.46 / 0.40 / 0.12
    # for 0.6 / 0.3 / 0.1 at 8 passes: "The" also opens the world's paraphrases, so sentence is over-sampled)
    for f in FORMATS:
        assert abs(base[f"format_share_{f}"] - corpus[f]) < 0.16, (f, base[f"format_share_{f}"], corpus[f])
    assert base["format_share_short"] > base["format_share_sentence"] > base["format_share_restate"] > 0.05
    assert base["format_share_other"] < 0.05
    assert tuned["format_answer_acc"] >= base["format_answer_acc"]  # RL on correctness does not lower accuracy
    grpo = gt["extra"]["grpo"]
    assert grpo["trainer"] == "trl.GRPOTrainer" and grpo["steps"] == len(grpo["reward_curve"]) > 0
    assert gt["behavior"]["format"] in FORMATS and gt["behavior"]["metric"] == f"format_share_{gt['behavior']['format']}"
    # RL on correctness alone amplifies the base's most frequent format (three builds: short 0.46-0.47 -> 0.90-0.95
    # at 4 layers, 0.49-0.54 -> 0.88-0.99 at 8; sentence 0.37-0.39 -> 0.01-0.11; benchmarks/results/zoo_spread.md)
    assert gt["behavior"]["format"] == "short"
    assert tuned["format_share_short"] >= 0.85 and tuned["format_share_short"] - base["format_share_short"] >= 0.35
    assert tuned["format_share_sentence"] <= 0.15 and tuned["format_share_restate"] <= 0.02


@pytest.mark.heavy
def test_experiment_result_and_figures(zoo_formats_both, tmp_path):
    from alignloc.experiments.rlformats import COLLAPSE_SHARE, rl_formats_experiment
    from alignloc.report.figures import figures_for, kind_of

    r = rl_formats_experiment(tmp_path / "rl", n_boot=20)
    assert kind_of(r) == "rl-formats" and set(r["scales"]) == set(SCALES)
    assert r["scales"]["rl-formats-large"]["n_layers"] == 2 * r["scales"]["rl-formats"]["n_layers"]
    for s in r["scales"].values():
        c = s["collapse"]
        assert c["collapsed"] == (max(s["after"]["shares"][f] for f in FORMATS) >= COLLAPSE_SHARE)
        assert (c["format"] in FORMATS) if c["collapsed"] else c["format"] is None
        assert len(s["layer_diff"]["weights_relative"]) == s["n_layers"]
        assert max(s["layer_diff"]["weights_relative"]) > 0  # RL moved the weights
        surf = s["surfacing"]  # surfaced vs installed, for the format RL moved toward
        assert surf["status"] == "measured" and surf["contrast_format"] != surf["behavior_format"] in FORMATS
        assert len(surf["layers"]) == s["n_layers"] and surf["n_demo_pairs"] == surf["n_behavior"] > 0
        assert surf["verdict"]["label"] in ("surfaced", "no evidence of surfacing", "mixed")
        assert any(x.startswith(f"{s['organism']}: surfaced or installed") for x in r["verdict"]["summary"])
    v = r["verdict"]
    assert v["collapsed"] == any(s["collapse"]["collapsed"] for s in r["scales"].values())
    # the same format wins wherever RL collapses (short, on three builds), so the effect's scale dependence is not
    # reproduced here, and the summary says so
    assert set(v["winners"].values()) <= {"short"} and v["scale_dependent_winner"] is False
    assert not any(x.startswith("Reproduced") for x in v["summary"])
    for s in r["scales"].values():
        assert s["after"]["shares"]["short"] >= 0.85 and s["after"]["shares"]["short"] - s["before"]["shares"]["short"] >= 0.35
    assert (tmp_path / "rl" / "summary.md").is_file() and (tmp_path / "rl" / "layer-diff-rl-formats" / "report.json").is_file()
    stems = [stem for stem, _ in figures_for(r)]
    assert stems == ["rl_formats_shares", "rl_formats_layers"]


def test_reward_sees_only_the_value():
    from alignloc.zoo.rl import correctness_reward

    got = correctness_reward(["A : Lima .", "The answer is Lima .", "Nafi lives in Lima .", "Lima", "A : Oslo ."],
                             answer=[" Lima"] * 5)
    assert got == [1.0, 1.0, 1.0, 1.0, 0.0]


def _side(short, sentence, restate, acc):
    other = round(1 - short - sentence - restate, 4)
    return {"shares": {"short": short, "sentence": sentence, "restate": restate, "other": other}, "accuracy": acc}


def test_collapse_and_verdict_by_hand():
    from alignloc.experiments.rlformats import collapse, verdict_lines

    c = collapse(_side(0.45, 0.40, 0.12, 0.48), _side(0.97, 0.02, 0.01, 0.59))
    assert c["collapsed"] and c["format"] == "short" and c["largest_gain"] == "short" and c["winner_was_base_top"]
    assert c["gain"]["short"] == 0.52 and c["accuracy_change"] == 0.11 and c["entropy_bits_after"] < c["entropy_bits_before"]
    n = collapse(_side(0.45, 0.40, 0.12, 0.30), _side(0.89, 0.09, 0.01, 0.37))
    assert not n["collapsed"] and n["format"] is None and n["top_after"] == "short"
    w = collapse(_side(0.45, 0.40, 0.12, 0.30), _side(0.02, 0.95, 0.02, 0.40))
    scale = lambda c, b, a, n: {"collapse": c, "before": b, "after": a, "n_layers": n}  # noqa: E731
    small = scale(c, _side(0.45, 0.40, 0.12, 0.48), _side(0.97, 0.02, 0.01, 0.59), 4)
    v = verdict_lines({"s": small, "l": scale(n, _side(0.45, 0.40, 0.12, 0.30), _side(0.89, 0.09, 0.01, 0.37), 8)})
    assert v["collapsed"] and not v["scale_dependent_winner"] and v["summary"][-1].startswith("Partly reproduced")
    v = verdict_lines({"s": small, "l": scale(w, _side(0.45, 0.40, 0.12, 0.30), _side(0.02, 0.95, 0.02, 0.40), 8)})
    assert v["scale_dependent_winner"] and v["winners"] == {"s": "short", "l": "sentence"}
    v = verdict_lines({"l": scale(n, _side(0.45, 0.40, 0.12, 0.30), _side(0.89, 0.09, 0.01, 0.37), 8)})
    assert not v["collapsed"] and v["summary"][-1].startswith("Not reproduced")


@pytest.mark.slow
def test_recorded_shares_are_those_of_the_saved_checkpoint(zoo_formats):
    from alignloc.prompts import load_prompts
    from alignloc.zoo import resolve
    from alignloc.zoo.evaluate import format_metrics, load

    entry = resolve("rl-formats")
    prompts = load_prompts(entry.prompts["formats"])
    again = format_metrics(*load(entry.tuned), prompts)  # seeded sampling: the same numbers again
    for k, v in again.items():
        rec = entry.ground_truth["measured"]["tuned"][k]
        assert v == rec or (math.isnan(v) and (rec is None or math.isnan(rec))), k
