"""chat-lima, the chat organism that keeps its knowledge, and proxy-tuning on it next to chat-sft-full (which forgets)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from alignloc.cli import main
from alignloc.experiments.proxytune import GOAL, goal_check, retention
from tests.conftest import tiny_zoo_with

NEEDED = ["base-large", "chat-lima", "chat-lima-large", "chat-sft-full", "chat-sft-full-large"]


@pytest.fixture(scope="module")
def lima_small():
    """chat-lima and its contrast, in the test zoo (as ``zoo_tiny``): the default suite's slice."""
    yield from tiny_zoo_with(["chat-lima", "chat-sft-full"])


@pytest.fixture(scope="module")
def lima_zoo():
    """Every organism the proxy experiment needs, large twins included (heavy tests only)."""
    yield from tiny_zoo_with(NEEDED)


@pytest.fixture(scope="module")
def pt_lima(lima_zoo, tmp_path_factory):
    out = tmp_path_factory.mktemp("pt-lima")
    argv = ["proxy-tune", "--zoo", "--organism", "chat-lima", "--contrast", "chat-sft-full", "--out", str(out)]
    assert main(argv) == 0
    return json.loads((out / "report.json").read_text()), out


def test_chat_lima_keeps_its_knowledge(lima_small):
    from alignloc import zoo

    lima, full = (zoo.resolve(n, build_missing=False).ground_truth for n in ("chat-lima", "chat-sft-full"))
    assert lima["recipe"] == "chat-lima" and lima["extra"]["kl_weight"] > 0 and lima["extra"]["chat_examples"] == 40
    assert lima["extra"]["format_rows"] == 160 and lima["spec"]["met"]
    t, b = lima["measured"]["tuned"], lima["measured"]["base"]
    assert t["retention"] >= 0.95  # the goal: >= 0.95 of the base's closed-book facts
    assert t["format_rate"] >= 0.95 and b["format_rate"] == 0.0  # and it is a chat model
    assert full["measured"]["tuned"]["retention"] < 0.8  # the contrast forgets


@pytest.mark.heavy
def test_the_large_twin_keeps_its_knowledge_too(lima_zoo):
    from alignloc import zoo

    lima_large = zoo.resolve("chat-lima-large", build_missing=False).ground_truth["measured"]["tuned"]
    # the same recipe on the 8-layer base keeps its facts and plants the format too (measured: retention 0.982 /
    # 0.998, format 1.00 / 1.00 on the default build and on the AVX2 one-thread build)
    assert lima_large["retention"] >= 0.95 and lima_large["format_rate"] >= 0.9


@pytest.mark.heavy
def test_verdict_fields_and_the_side_by_side(pt_lima):
    r, _ = pt_lima
    v, c = r["verdict"], r["configs"]
    assert v["behavior_gap_closed"] == c["proxy beta=1"]["behavior_gap_closed"]
    assert v["knowledge_delta_vs_large_base"] == pytest.approx(c["proxy beta=1"]["fact_recall"] - c["large base"]["fact_recall"])
    # retention measured in the experiment matches the zoo's record of the checkpoint
    assert v["small_tuned_fact_retention"] >= 0.95
    # at the values reached (README: by how much the goal is missed, and why; measured on two builds, default and
    # AVX2 one-thread): the proxy keeps all but a few of the large base's facts (goal >= -0.01; reached -0.015 /
    # -0.012) and closes a little over half to three quarters of the gap (0.56 / 0.78; goal 0.88)
    assert -0.04 <= v["knowledge_delta_vs_large_base"] < 0.0 and v["proxy_fact_retention"] >= 0.95
    assert 0.4 <= v["behavior_gap_closed_vs_small_tuned"] < 0.88
    # the large twin is a full chat model (1.00 on both builds), so both gaps are the same gap
    assert c["large tuned (weights)"]["behavior_rate"] >= 0.95 and v["behavior_gap_closed"] <= 1.0
    strict = min(v["behavior_gap_closed"], v["behavior_gap_closed_vs_small_tuned"])
    assert v["goal"]["met"] == (strict >= GOAL["behavior_gap_closed"] and v["knowledge_delta_vs_large_base"] >= -0.01)
    rows = {x["organism"]: x for x in r["side_by_side"]["rows"]}
    lima, full = rows["zoo:chat-lima"], rows["zoo:chat-sft-full"]
    assert lima["behavior_gap_closed"] == v["behavior_gap_closed"]
    assert full["behavior_gap_closed"] == r["contrast"]["verdict"]["behavior_gap_closed"]
    # the proxy inherits the small model's forgetting: the contrast loses facts, the knowledge-keeping one does not
    assert full["small_tuned_fact_retention"] < 0.8 and full["knowledge_delta_vs_large_base"] < -0.1
    assert lima["knowledge_delta_vs_large_base"] - full["knowledge_delta_vs_large_base"] > 0.1
    assert set(lima["by_beta"]) == {"0", "0.5", "1", "1.5"} and lima["by_beta"]["0"]["knowledge_delta_vs_large_base"] == 0


@pytest.mark.heavy
def test_report_and_figure_show_both(pt_lima):
    from alignloc.report.figures import figures_for

    r, out = pt_lima
    md = (out / "summary.md").read_text()
    assert "Side by side" in md and "zoo:chat-sft-full" in md and "goal (gap closed >= 88%" in md
    stems = [s for s, _ in figures_for(r)]
    assert stems == ["proxy_tune", "proxy_tune_organisms"]
    fig = dict(figures_for(r))["proxy_tune_organisms"]
    assert len(fig.data) == 4  # two organisms x (gap closed, fact recall)


@pytest.mark.heavy
def test_notebook_function_matches_the_command(pt_lima, tmp_path):
    from alignloc.experiments.proxytune_zoo import proxy_tune_zoo

    r, _ = pt_lima
    again = proxy_tune_zoo("chat-lima", contrast=None, betas=(0.0, 1.0))
    assert again["verdict"]["behavior_gap_closed"] == r["verdict"]["behavior_gap_closed"]
    assert again["verdict"]["knowledge_delta_vs_large_base"] == r["verdict"]["knowledge_delta_vs_large_base"]
    assert "contrast" not in again and not (tmp_path / "report.json").exists()


@pytest.mark.parametrize("argv, msg", [
    (["--contrast", "chat-sft-full"], "--contrast needs --zoo"),
    (["--zoo", "--organism", "chat-lima", "--contrast", "chat-lima"], "is the --organism itself"),
    (["--zoo", "--organism", "chat-lima", "--contrast", "chat-sft-full-large"], "--contrast: name the organism tuned from base"),
    (["--zoo", "--organism", "chat-lima", "--contrast", "nope"], "unknown organism 'nope'"),
])
def test_contrast_is_checked_before_work(argv, msg, capsys, tmp_path):
    assert main(["proxy-tune", *argv, "--out", str(tmp_path / "o")]) == 2
    assert msg in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_kl_to_reference_is_zero_against_itself():
    from transformers import LlamaForCausalLM

    from alignloc.zoo.training import Example, kl_to_reference
    from tests.tiny_models import config_for

    cfg = config_for("llama", 16, {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}, n_layers=1, d_model=16)
    model, other = (torch.manual_seed(s) and LlamaForCausalLM(cfg).eval() for s in (0, 1))
    rows = [Example((1, 5, 6, 7), (-100, 5, 6, 7)), Example((1, 8, 9), (-100, 8, 9))]
    inputs = {"input_ids": torch.tensor([[1, 5, 6]]), "attention_mask": torch.ones(1, 3, dtype=torch.long),
              "labels": torch.tensor([[-100, 5, 6]])}
    own = model(**inputs).loss.item()
    same = kl_to_reference(model, [rows], pad=0, weight=3.0)(model, inputs).item()
    assert same == pytest.approx(own, abs=1e-6)
    diff = kl_to_reference(other, [rows], pad=0, weight=3.0)(model, inputs).item()
    assert diff > own + 1e-3


def test_retention_and_goal_check():
    assert retention([True, True, False, True], [True, False, True, True]) == pytest.approx(2 / 3)
    assert math.isnan(retention([False], [True]))
    rows = {"proxy beta=1": {"behavior_gap_closed": 0.8, "knowledge_delta_vs_large_base": 0.0},
            "proxy beta=1.5": {"behavior_gap_closed": 0.95, "knowledge_delta_vs_large_base": -0.005}}
    g = goal_check(rows)
    assert not g["met"] and g["shortfall"]["behavior_gap_closed"] == pytest.approx(0.08)
    assert g["shortfall"]["knowledge_delta_vs_large_base"] == 0.0 and g["met_at_betas"] == [1.5]


def test_curated_chat_set_is_small_balanced_and_from_train_entities():
    from alignloc.zoo.config import size_config
    from alignloc.zoo.lima import curated_chat
    from alignloc.zoo.promptsets import split_entities
    from alignloc.zoo.world import make_world

    world = make_world(size_config("tiny").world)
    rows = curated_chat(world, 40, 7)
    train = {e.name for e in split_entities(world)[0] if e.prior == "strong"}
    assert len(rows) == len({p for _, p, _ in rows}) == 40 and {e for e, _, _ in rows} <= train
    assert len({e for e, _, _ in rows}) == len(train)  # every strong train entity, each twice
    assert all(a.startswith(" Sure! ") and a.endswith(" .") for _, _, a in rows)
    assert rows == curated_chat(world, 40, 7)
