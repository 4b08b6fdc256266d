"""Organism specifications (checked at build time), the retry/refusal of a build that misses its
specification, and fingerprints that see the training code."""

from __future__ import annotations

import json
import shutil

import pytest

from alignloc.zoo import provenance, specs
from alignloc.zoo.specs import check, missed, spec_for

TINY = "tiny"


def test_check_reads_paths_offsets_and_other_artifacts():
    measured = {"tuned": {"format_rate": 0.55, "retention": 0.96}, "base": {"format_rate": 0.0}}
    got = check(["tuned.format_rate >= 0.95", "tuned.retention >= base.format_rate + 0.9", "base.format_rate == 0",
                 "tuned.missing > 0", "tuned.retention >= @base.fact_recall_weak + 0.1"],
                measured, others=lambda n: {"fact_recall_weak": 0.9} if n == "base" else None)
    assert [c.ok for c in got] == [False, True, True, False, False]
    assert got[1].bound == pytest.approx(0.9) and got[4].bound == pytest.approx(1.0)
    assert "tuned.format_rate >= 0.95 (measured 0.55)" in missed(got) and "measured nothing" in missed(got)
    with pytest.raises(ValueError, match="malformed"):
        check(["tuned.format_rate is high"], measured)


def test_drift_organisms_are_built_after_the_drift_of_their_own_base():
    from alignloc.zoo.config import size_config
    from alignloc.zoo.registry import NATURAL_LARGE_ORGANISMS, build_order, needed_bases

    cfg = size_config(TINY)
    got = build_order(["fact-edit-L6-natural-large", "chat-sft-upper", "refusal-lora-L1-drift", "chat-sft-upper"], cfg)
    assert got == ["control-drift", "control-drift-large", "fact-edit-L6-natural-large", "chat-sft-upper",
                   "refusal-lora-L1-drift"]
    assert build_order(["chat-sft-upper", "base-large"], cfg) == ["chat-sft-upper", "base-large"]
    # the 8-layer natural tier: single-layer edits at distinct layers of the 8-layer base, each with a spec
    from alignloc.zoo.artifacts import n_layers_by_base
    from alignloc.zoo.names import parse_name

    parsed = [parse_name(n, n_layers_by_base(cfg)) for n in NATURAL_LARGE_ORGANISMS]
    assert {p.base for p in parsed} == {"base-large"} and len({p.k for p in parsed}) == len(parsed) >= 5
    assert all(spec_for(p.name, p.recipe, True, False) for p in parsed)
    assert spec_for("control-drift-large", "control-drift", False, False) == spec_for("control-drift", "control-drift",
                                                                                      False, False)
    with pytest.raises(ValueError, match="unknown organism"):
        build_order(["no-such-organism"], cfg)
    # an 8-layer organism alone needs base too: base-large's specification reads base's recall
    assert needed_bases(build_order(["fact-edit-L6-natural-large"], cfg), cfg) == {"base", "base-large"}
    assert needed_bases(["format-surfaced"], cfg) == {"base", "base-fmt"} and needed_bases(["dpo-polite"], cfg) == {"base"}


def test_every_default_artifact_declares_a_specification():
    from alignloc.zoo import DEFAULT_ORGANISMS, HARD_ORGANISMS
    from alignloc.zoo.config import size_config
    from alignloc.zoo.names import parse_name
    from alignloc.zoo.registry import n_layers_by_base

    n_layers = n_layers_by_base(size_config(TINY))
    for name in [*DEFAULT_ORGANISMS, "control-drift", *HARD_ORGANISMS, "chat-lima", "chat-lima-large",
                 "format-surfaced", "format-installed"]:
        p = parse_name(name, n_layers)
        assert spec_for(name, p.recipe, p.drift, False), name
    drift = spec_for("chat-sft-upper-drift", "chat-sft-upper", True, False)
    assert drift == ["base.format_rate <= 0.1", "tuned.format_rate >= 0.9", "drift_only.format_rate <= 0.02"]
    assert "tuned.retention >= 0.85" in spec_for("chat-sft-upper", "chat-sft-upper", False, False)
    assert spec_for("base-large", "", False, True)[-1].startswith("fact_recall_weak >= @base.")


def test_code_hash_ignores_prose_and_sees_code():
    a = 'def f(x):\n    """Doc."""\n    return x + 1  # one\n'
    b = 'def f(x):\n    """Other words."""\n    # a new comment\n    return x + 1\n'
    c = 'def f(x):\n    """Doc."""\n    return x + 2\n'
    assert provenance._code_only(a) == provenance._code_only(b) != provenance._code_only(c)
    names = {p.name for p in provenance.training_files()}
    assert {"training.py", "recipes.py", "lima.py", "pretrain.py", "world.py", "specs.py", "evaluate.py"} <= names
    assert not names & {"registry.py", "commands.py", "realdisk.py", "provenance.py", "real.py"}
    real = {p.name for p in provenance.training_files(real=True)}
    assert real - names == {"real.py", "realchain.py", "realfacts.py"}  # the real tier's recipes, not its disk layout
    assert provenance.training_code_hash(real=True) != provenance.training_code_hash()


def test_code_change_changes_the_fingerprint(monkeypatch):
    from alignloc.zoo.artifacts import base_fingerprint
    from alignloc.zoo.config import size_config

    before = base_fingerprint(size_config(TINY), "base")
    monkeypatch.setattr(provenance, "training_code_hash", lambda: "a-recipe-changed")
    monkeypatch.setattr("alignloc.zoo.artifacts.training_code_hash", lambda: "a-recipe-changed")
    assert base_fingerprint(size_config(TINY), "base") != before
    monkeypatch.setenv(provenance.THREADS_VAR, "1")
    assert provenance.thread_override() == 1
    monkeypatch.setenv(provenance.THREADS_VAR, "two")
    with pytest.raises(ValueError, match="ALIGNLOC_ZOO_THREADS"):
        provenance.thread_override()


def test_built_zoo_met_its_specifications(zoo_tiny):
    from alignloc.zoo import list_organisms

    rows = [r for r in list_organisms(TINY) if r["built"] and r["name"] in {
        "base", "base-large", "chat-sft-upper", "refusal-lora-L1", "fact-edit-L1", "chat-sft-upper-drift"}]
    assert len(rows) == 6
    for r in rows:
        assert r["spec"]["met"] and r["spec"]["requirements"], r["name"]
        assert all(c["ok"] and c["value"] is not None for c in r["spec"]["requirements"]), r


def test_build_refuses_an_organism_that_misses_its_specification(zoo_tiny, tmp_path, monkeypatch, capsys):
    """A real build (control-continued, trained twice) through the CLI against a requirement no organism
    meets: both seeds are tried, the build fails naming the miss in one error line (exit 2), and nothing
    is installed."""
    from alignloc.cli import main

    root = tmp_path / "zoo"
    shutil.copytree(zoo_tiny / TINY / "base", root / TINY / "base")
    monkeypatch.setenv("ALIGNLOC_ZOO", str(root))
    monkeypatch.setitem(specs.ORGANISM_SPECS, "control-continued", ["tuned.retention >= 1.5"])
    monkeypatch.setattr("alignloc.zoo.artifacts.MAX_ATTEMPTS", 2)
    assert main(["zoo", "build", "control-continued"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert sum("missed its specification with training seed" in m for m in err) == 2
    assert err[-1].startswith("alignloc: error: zoo artifact 'control-continued'") and "retention" in err[-1]
    assert "missed its specification with each of 2 training seeds (0, 1000)" in err[-1]
    assert not (root / TINY / "control-continued").exists()
    assert not [p for p in (root / TINY).iterdir() if p.name != "base"], "no partial build left behind"
    assert json.loads((root / TINY / "base" / "info.json").read_text())["spec"]["met"]
