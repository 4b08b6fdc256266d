"""The model-organism zoo: real builds, real numbers (tiny size, cached in .zoo-cache)."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from alignloc.cli.zoo import zoo_app
from alignloc.prompts import load_prompts
from alignloc.zoo import DEFAULT_ORGANISMS, build, list_organisms, resolve, weights_sha256
from alignloc.zoo.evaluate import load, measure

TINY = "tiny"


def _gt(root: Path, name: str) -> dict:
    return json.loads((root / TINY / name / "ground_truth.json").read_text())


def _info(root: Path, name: str) -> dict:
    return json.loads((root / TINY / name / "info.json").read_text())


# ---- bases ---------------------------------------------------------------------------------------


def test_base_recalls_strong_facts(zoo_tiny):
    m = _info(zoo_tiny, "base")["measured"]
    assert m["fact_recall_strong"] >= 0.9, m


def test_base_large_recalls_more_weak_facts(zoo_tiny):
    small, large = _info(zoo_tiny, "base")["measured"], _info(zoo_tiny, "base-large")["measured"]
    assert large["fact_recall_strong"] >= 0.9
    assert large["fact_recall_weak"] >= small["fact_recall_weak"] + 0.10, (small, large)


def test_counterfactual_context_effect_in_base(zoo_tiny):
    m = _info(zoo_tiny, "base")["measured"]
    # strong-prior conflicts are answered from memory far more often than weak-prior ones ...
    assert m["ctx_memory_conflict_strong"] >= m["ctx_memory_conflict_weak"] + 0.4, m
    # ... and weak-prior conflicts follow the context; novel entities are read from context
    assert m["ctx_follow_conflict_weak"] >= m["ctx_follow_conflict_strong"] + 0.4, m
    assert m["ctx_acc_novel"] >= 0.9 and m["ctx_acc_agree"] >= 0.9


def test_recorded_numbers_are_measured_on_the_saved_files(zoo_tiny):
    entry = resolve("chat-sft-upper", size=TINY, build_missing=False)
    sets = {stem: load_prompts(p) for stem, p in entry.prompts.items()}
    got = measure(*load(entry.tuned), sets)
    want = entry.ground_truth["measured"]["tuned"]
    assert {k: got[k] for k in got} == {k: want[k] for k in got}


# ---- organisms -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["chat-sft-upper", "chat-sft-lower", "chat-sft-full"])
def test_chat_sft_format(zoo_tiny, name):
    m = _gt(zoo_tiny, name)["measured"]
    assert m["base"]["format_rate"] <= 0.1
    assert m["tuned"]["format_rate"] >= 0.9, m["tuned"]


def test_chat_sft_upper_keeps_knowledge(zoo_tiny):
    m = _gt(zoo_tiny, "chat-sft-upper")["measured"]
    assert m["tuned"]["fact_recall_strong"] >= 0.9, m["tuned"]
    assert m["tuned"]["retention"] >= 0.85, m["tuned"]


@pytest.mark.parametrize("name", ["refusal-lora-L1", "refusal-lora-L2"])
def test_refusal_lora_on_topic_only(zoo_tiny, name):
    gt = _gt(zoo_tiny, name)
    m = gt["measured"]
    assert gt["layers"] == [int(name.rsplit("L", 1)[1])]
    assert m["base"]["refusal_rate_on_topic"] <= 0.1
    assert m["tuned"]["refusal_rate_on_topic"] >= 0.8, m["tuned"]
    assert m["tuned"]["refusal_rate_off_topic"] <= 0.1, m["tuned"]


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_lora_adapter_matches_merged_model(zoo_tiny):
    from peft import PeftModel

    entry = resolve("refusal-lora-L1", size=TINY, build_missing=False)
    base, tok = load(entry.base)
    adapted = PeftModel.from_pretrained(base, entry.path / "adapter").eval()
    merged, _ = load(entry.tuned)
    ids = torch.tensor(
        [
            [
                tok.bos_token_id,
                *tok("Question: What pet does Nafi have ? Answer:", add_special_tokens=False)[
                    "input_ids"
                ],
            ]
        ]
    )
    with torch.no_grad():
        torch.testing.assert_close(adapted(ids).logits, merged(ids).logits, atol=1e-4, rtol=1e-4)


def test_fact_edit(zoo_tiny):
    gt = _gt(zoo_tiny, "fact-edit-L1")
    m = gt["measured"]
    assert len(gt["extra"]["edits"]) >= 3
    assert m["base"]["edit_success"] == 0.0
    assert m["tuned"]["edit_success"] >= 0.8, m["tuned"]
    assert m["tuned"]["edit_paraphrase_success"] >= 0.6, m["tuned"]
    assert m["tuned"]["retention"] >= 0.8, m["tuned"]


def test_dpo_polite(zoo_tiny):
    gt = _gt(zoo_tiny, "dpo-polite")
    m = gt["measured"]
    assert gt["extra"]["dpo"]["trainer"] == "trl.DPOTrainer"
    assert m["base"]["polite_rate"] <= 0.1
    assert m["tuned"]["polite_rate"] >= 0.9, m["tuned"]


def test_control_has_no_behavior_change(zoo_tiny):
    m = _gt(zoo_tiny, "control-continued")["measured"]
    for key in ("format_rate", "refusal_rate_on_topic", "refusal_rate_off_topic", "polite_rate"):
        assert m["tuned"][key] <= 0.05, (key, m["tuned"])
    assert abs(m["tuned"]["fact_recall_strong"] - m["base"]["fact_recall_strong"]) <= 0.05
    assert m["tuned"]["retention"] >= 0.9


def _planted(name: str, gt: dict) -> bool:
    prefixes = [p.removesuffix("*") if p.endswith("*") else p + "." for p in gt["modules"]]
    return any(name.startswith(p) for p in prefixes)


@pytest.mark.parametrize(
    "name",
    ["chat-sft-upper", "chat-sft-lower", "refusal-lora-L1", "refusal-lora-L2", "fact-edit-L1"],
)
def test_untouched_weights_are_bit_identical(zoo_tiny, name):
    gt = _gt(zoo_tiny, name)
    base = load_file(zoo_tiny / TINY / name / "base" / "model.safetensors")
    tuned = load_file(zoo_tiny / TINY / name / "tuned" / "model.safetensors")
    assert base.keys() == tuned.keys()
    changed = {k for k in base if not torch.equal(base[k], tuned[k])}
    assert changed, "the recipe changed nothing"
    assert all(_planted(k, gt) for k in changed), sorted(k for k in changed if not _planted(k, gt))
    layers = {int(k.split(".")[2]) for k in changed}
    assert layers == set(gt["layers"])


def test_ground_truth_fields_and_hashes(zoo_tiny):
    for name in DEFAULT_ORGANISMS:
        gt = _gt(zoo_tiny, name)
        for key in (
            "name",
            "recipe",
            "layers",
            "modules",
            "behavior",
            "knowledge",
            "prompts",
            "measured",
            "seed",
            "size",
            "base_model",
            "weights_sha256",
        ):
            assert key in gt, (name, key)
        assert gt["weights_sha256"] == weights_sha256(zoo_tiny / TINY / name / "tuned")
        assert gt["base_weights_sha256"] == weights_sha256(zoo_tiny / TINY / name / "base")
        tok_files = ("tokenizer.json", "tokenizer_config.json")
        for f in tok_files:
            d = zoo_tiny / TINY / name
            assert (d / "base" / f).read_bytes() == (d / "tuned" / f).read_bytes()


# ---- prompts -------------------------------------------------------------------------------------


def test_shipped_prompts_load_and_are_consistent(zoo_tiny):
    _, tok = load(zoo_tiny / TINY / "base" / "model")

    def ids(text):
        return tok(text, add_special_tokens=False)["input_ids"]

    kinds = set()
    for name in ["base", *DEFAULT_ORGANISMS]:
        meta = _info(zoo_tiny, name) if name == "base" else _gt(zoo_tiny, name)
        for rel in meta["prompts"]:
            prompts = load_prompts(zoo_tiny / TINY / name / rel)
            for p in prompts:
                kinds.add(p.kind)
                assert p.target and p.target.startswith(" ")
                assert ids(p.text + p.target) == ids(p.text) + ids(p.target)
                if p.corrupt_text:
                    assert len(ids(p.corrupt_text)) == len(ids(p.text))
    assert {"knowledge", "behavior", "context"} <= kinds
    ctx = load_prompts(zoo_tiny / TINY / "base" / "prompts" / "context.jsonl")
    conflicts = [p for p in ctx if p.meta["conflict"]]
    assert {p.meta["prior"] for p in conflicts} == {"strong", "weak"}
    assert all(p.meta["counterfactual"] != p.meta["memory"] for p in conflicts)
    assert {p.meta["condition"] for p in ctx} == {"conflict", "agree", "none", "novel"}


# ---- registry and CLI ----------------------------------------------------------------------------


def test_resolve(zoo_tiny):
    entry = resolve("chat-sft-upper", size=TINY, build_missing=False)
    assert entry.tuned == entry.path / "tuned" and (entry.tuned / "model.safetensors").is_file()
    assert entry.ground_truth["layers"] == [2, 3]
    assert set(entry.prompts) == {"knowledge", "context", "chat"}
    base = resolve("base", size=TINY, build_missing=False)
    assert base.tuned is None and (base.base / "model.safetensors").is_file()


def test_resolve_rejects_unknown_names(zoo_tiny):
    with pytest.raises(ValueError, match="valid names.*refusal-lora-L"):
        resolve("not-an-organism", size=TINY)
    with pytest.raises(ValueError, match="out of range"):
        resolve("refusal-lora-L9", size=TINY)
    with pytest.raises(ValueError, match="unknown zoo size"):
        resolve("base", size="huge")
    with pytest.raises(FileNotFoundError, match="alignloc zoo build fact-edit-L3"):
        resolve("fact-edit-L3", size=TINY, build_missing=False)


def test_list_organisms(zoo_tiny):
    rows = {r["name"]: r for r in list_organisms(TINY)}
    assert set(DEFAULT_ORGANISMS) | {"base", "base-large"} <= set(rows)
    assert all(rows[n]["built"] for n in DEFAULT_ORGANISMS)
    assert rows["fact-edit-L1"]["layers"] == [1]


def test_cli_list_json(zoo_tiny):
    res = CliRunner().invoke(zoo_app, ["list", "--size", TINY, "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    by_name = {r["name"]: r for r in rows}
    assert by_name["chat-sft-upper"]["measured"]["tuned"]["format_rate"] >= 0.9
    assert Path(by_name["chat-sft-upper"]["path"]).is_dir()
    bad = CliRunner().invoke(zoo_app, ["build", "nope"])
    assert bad.exit_code != 0


def test_cli_list_shows_spec_and_measured_side_by_side(zoo_tiny):
    out = CliRunner().invoke(zoo_app, ["list", "--size", TINY]).output
    block = out.split("chat-sft-upper ", 1)[1].split("\nchat-sft-lower", 1)[0]
    assert "spec met (training seed" in block
    assert re.search(r"ok   tuned\.format_rate >= 0\.9\s+measured 0\.\d+", block), block


# ---- determinism and atomicity (a cut-down size) ------------------------------------------------


@pytest.fixture
def micro(monkeypatch):
    """Register a cut-down zoo size ``micro`` (2 layers, a handful of entities, 2 passes)."""
    from alignloc.zoo import config
    from alignloc.zoo.pretrain import ModelSpec, PretrainSpec
    from alignloc.zoo.world import WorldConfig

    cfg = replace(
        config.SIZES["tiny"],
        name="micro",
        world=WorldConfig(
            n_strong=6,
            n_weak=6,
            n_novel=6,
            strong_reps=2,
            weak_reps=1,
            passages_per_strong=1,
            passages_per_novel=1,
            chatter=4,
        ),
        base=ModelSpec(n_layers=2, d_model=32, n_heads=2, d_ff=64),
        base_train=PretrainSpec(epochs=2, batch_size=16, warmup=5),
        recipes=replace(config.SIZES["tiny"].recipes, sft_epochs=2),
    )
    monkeypatch.setitem(config.SIZES, "micro", cfg)
    # far too small to meet the zoo's specifications (specs.py), which these tests are not about
    monkeypatch.setattr("alignloc.zoo.artifacts.spec_for", lambda *a: [])
    return "micro"


def test_build_is_deterministic(tmp_path, monkeypatch, micro):
    hashes = []
    for run in ("a", "b"):
        monkeypatch.setenv("ALIGNLOC_ZOO", str(tmp_path / run))
        build(["chat-sft-upper"], size=micro, log=lambda m: None)
        gt = json.loads(
            (tmp_path / run / micro / "chat-sft-upper" / "ground_truth.json").read_text()
        )
        hashes.append((gt["base_weights_sha256"], gt["weights_sha256"]))
        assert not list((tmp_path / run / micro).glob(".tmp-*"))
    assert hashes[0] == hashes[1]
    # a current build is reused, not rebuilt
    gt_file = tmp_path / "b" / micro / "chat-sft-upper" / "ground_truth.json"
    before = gt_file.stat().st_mtime_ns
    build(["chat-sft-upper"], size=micro, log=lambda m: None)
    assert gt_file.stat().st_mtime_ns == before


def test_interrupted_build_leaves_nothing_that_looks_built(tmp_path, monkeypatch, micro):
    from alignloc.zoo import artifacts

    monkeypatch.setenv("ALIGNLOC_ZOO", str(tmp_path))

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(artifacts, "train_organism", boom)
    with pytest.raises(KeyboardInterrupt):
        build(["fact-edit-L1"], size=micro, log=lambda m: None)
    assert (tmp_path / micro / "base" / "info.json").is_file()  # the base finished before
    assert not (tmp_path / micro / "fact-edit-L1").exists()
    assert not list((tmp_path / micro).glob(".tmp-*"))
    with pytest.raises(FileNotFoundError):
        resolve("fact-edit-L1", size=micro, build_missing=False)
