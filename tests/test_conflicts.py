"""Conflict sets built from real facts (``--conflicts``), the head search, and the length-matched unknown swap."""

from __future__ import annotations

import re

import pytest

from alignloc import options as check
from alignloc.cli import main
from alignloc.contextprior.data import apply_fix, load_sets
from alignloc.contextprior.heads import top_heads
from alignloc.errors import UsageError
from alignloc.experiments.conflicts import (
    SETS,
    conflict_prompts,
    counterfactuals,
    countries,
    prompt_text,
)
from alignloc.zoo.realfacts import CLOZE, FACTS, MORE_FACTS, NEUTRAL_TEXT, UNKNOWN_PLACES


def test_fact_lists_are_clean():
    names = [c for c, _ in countries()]
    assert len(names) == len(set(names)) == len(FACTS) + len(MORE_FACTS) == 76
    assert len({v for _, v in countries()}) == 76  # no capital twice
    assert not set(UNKNOWN_PLACES) & set(names) and len(set(UNKNOWN_PLACES)) == len(UNKNOWN_PLACES) == 24
    assert not any("capital" in t.lower() for t in NEUTRAL_TEXT) and len(NEUTRAL_TEXT) == 24


def test_counterfactuals_differ_from_the_fact_in_their_first_word():
    truth = dict(countries())
    cf = counterfactuals(0)
    assert set(cf) == set(truth)
    assert all(cf[c] != truth[c] and cf[c].split()[0][:3] != truth[c].split()[0][:3] for c in truth)
    assert cf == counterfactuals(0) and cf != counterfactuals(1)  # seeded


def test_prompt_text_asserts_the_value_then_asks_by_cloze():
    text, ctx = prompt_text("capitals", "France", "Rome")
    assert (text, ctx) == ("Note: Rome is the capital of France. The capital of France is", "Rome is the capital of France.")
    text, ctx = prompt_text("capitals-direct", "France", "Rome")
    assert text == "Context: The capital of France is Rome.\nThe capital of France is" and ctx in text


@pytest.mark.parametrize("name", list(SETS))
def test_conflict_prompts_form_every_group(name):
    prompts = conflict_prompts(name, known={"France", "Japan"})
    by = {}
    for p in prompts:
        by.setdefault(p.meta["condition"], []).append(p)
    assert {k: len(v) for k, v in by.items()} == {"conflict": 76, "agree": 76, "none": 76, "novel": 24}
    for p in by["conflict"]:
        c = p.meta["entity"]
        assert p.context in p.text and p.text.endswith(CLOZE.format(c=c)) and p.text.count(c) == 2
        assert p.target.strip() in p.context and p.target != p.foil
        assert not re.search(rf"\b{re.escape(p.foil.strip())}\b", p.text)  # the true capital is never stated
        assert p.meta["prior"] == ("strong" if c in {"France", "Japan"} else "weak")
    assert all(p.target.strip() in p.context for p in by["agree"] + by["novel"])
    assert all(p.context is None and p.text == CLOZE.format(c=p.meta["entity"]) for p in by["none"])
    sets = load_sets(prompts, list(NEUTRAL_TEXT))
    assert (len(sets.strong), len(sets.weak), len(sets.closed)) == (2, 74, 76)
    assert sets.unknown_names == sorted(UNKNOWN_PLACES) and sets.texts == list(NEUTRAL_TEXT)
    anon = apply_fix(by["conflict"][0], "anonymize_subject", "", "Gondor")
    assert by["conflict"][0].meta["entity"] not in anon.text and anon.text.count("Gondor") == 2
    with pytest.raises(ValueError, match="unknown conflict set"):
        conflict_prompts("rivers", known=())


def test_conflict_option_is_checked_before_work(tmp_path, capsys):
    sets = tuple(SETS)
    assert check.conflict_set(None, None, sets) is None and check.conflict_set("capitals", None, sets) == "capitals"
    with pytest.raises(UsageError, match="--conflicts: 'rivers' is not one of capitals, capitals-direct"):
        check.conflict_set("rivers", None, sets)
    with pytest.raises(UsageError, match="give one of them"):
        check.conflict_set("capitals", tmp_path / "p.jsonl", sets)
    out = tmp_path / "never"
    assert main(["context-prior", "zoo:smollm2", "--conflicts", "rivers", "--out", str(out)]) == 2
    assert "--conflicts" in capsys.readouterr().err and not out.exists()


def test_top_heads_ranks_by_mean_score():
    import torch

    scores = torch.zeros(4, 3, 2)
    scores[:, 2, 1] = 5.0
    scores[:, 0, 0] = 1.0
    scores[0, 1, 1] = 100.0  # one prompt only: mean 25
    assert top_heads(scores, 3) == [(1, 1), (2, 1), (0, 0)]
    assert len(top_heads(scores, 100)) == 6


def test_head_attribution_adds_up_to_each_attention_output(zoo_tiny):
    """Summed over heads, a layer's scores equal its attention output read through the final norm's
    scale and the unembedding (computed here from recorded activations, independently)."""
    import torch

    from alignloc.contextprior.evaluate import batches, first_token
    from alignloc.contextprior.heads import head_attribution
    from alignloc.models.hooks import run_recording
    from alignloc.models.pair import load_model
    from alignloc.sites import Site
    from alignloc.zoo import organism_prompts

    m = load_model("zoo:base")
    n = m.config.num_hidden_layers
    conf = [p for p in organism_prompts("base") if p.meta.get("condition") == "conflict"][:8]
    s = head_attribution(m, conf, bos=True)
    assert s.shape == (8, n, m.config.num_attention_heads) and s.abs().sum() > 0
    b = next(batches(m, conf, True))
    sites = [Site(layer, "attn_out") for layer in range(n)] + [Site(n - 1, "resid_post")]
    acts = run_recording(m.model, m.family, sites, b.ids, b.mask)
    rows = torch.arange(8)
    x = acts[Site(n - 1, "resid_post")][rows, b.last]
    norm = m.model.model.norm
    scale = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    w_u = m.model.get_output_embeddings().weight
    u = (w_u[[first_token(m.tokenizer, p.target) for p in conf]] - w_u[[first_token(m.tokenizer, p.foil) for p in conf]])
    for layer in range(n):
        want = (acts[Site(layer, "attn_out")][rows, b.last] * norm.weight * scale * u).sum(-1)
        torch.testing.assert_close(s[:, layer].sum(-1), want, atol=1e-4, rtol=1e-4)


def test_swap_unknown_keeps_the_token_count(zoo_tiny):
    from alignloc.experiments.contextprior import swap_unknown
    from alignloc.models.pair import load_model
    from alignloc.zoo import organism_prompts

    m = load_model("zoo:base")
    p = next(p for p in organism_prompts("base") if p.meta.get("condition") == "conflict")
    width = len(m.tokenizer.encode(p.text, add_special_tokens=False))
    names = ["Zzqxv Wwqpt Kkrst", p.positions["subject"] + "x", "Nevish"]  # a long name first: skipped
    q = swap_unknown(m.tokenizer, p, names, 0)
    assert q.positions["subject"] != p.positions["subject"]
    assert len(m.tokenizer.encode(q.text, add_special_tokens=False)) == width
