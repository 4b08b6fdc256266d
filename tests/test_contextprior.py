"""The context-prior experiment: prompt groups and fixes, gating, and the run on the zoo's base model."""

from __future__ import annotations

import json

import pytest

from alignloc.cli import main
from alignloc.contextprior.data import apply_fix, load_sets, subject_mask, with_unknown_subject
from alignloc.contextprior.evaluate import top1
from alignloc.interventions.specs import Scale
from alignloc.prompts import Prompt, PromptFormatError
from alignloc.tokens import encode_prompts
from tests.test_layerdiff_units import dom_in_chromium

CONFLICT = Prompt(id="c1", kind="context", text="Context: Nafi likes the colour black . Question: What colour does Nafi like ? Answer:",
                  target=" black", foil=" blue", context="Nafi likes the colour black .", positions={"subject": "Nafi"},
                  meta={"condition": "conflict", "prior": "strong", "entity": "Nafi"})


def test_prompt_fixes_and_rewrites():
    assert apply_fix(CONFLICT, "instruction", "Use the context .").text.startswith("Use the context . Context: Nafi")
    assert apply_fix(CONFLICT, "repeat_context", "").text.count("Nafi likes the colour black .") == 2
    moved = apply_fix(CONFLICT, "context_after_question", "").text
    assert moved == "Question: What colour does Nafi like ? Context: Nafi likes the colour black . Answer:"
    anon = apply_fix(CONFLICT, "anonymize_subject", "", "Nevish")
    assert "Nafi" not in anon.text and anon.text.count("Nevish") == 2 and anon.context.startswith("Nevish")
    closed = Prompt(id="n1", kind="context", text="Question: What colour does Nafi like ? Answer:", meta={"condition": "none"})
    assert apply_fix(closed, "repeat_context", "") == closed  # nothing to repeat
    assert with_unknown_subject(CONFLICT, "Zed").positions["subject"] == "Zed"


def test_subject_mask_finds_every_occurrence(zoo_tiny):
    from alignloc.models.pair import load_model

    m = load_model("zoo:base")
    enc = encode_prompts(m.tokenizer, [CONFLICT], bos=True)
    mask = subject_mask(CONFLICT, enc.offsets[0], len(enc.ids[0]))
    assert [m.tokenizer.decode([enc.ids[0][i]]) for i in mask.nonzero()[:, 0].tolist()] == ["Nafi", "Nafi"]


def test_load_sets_names_what_is_missing():
    bad = Prompt(**{**CONFLICT.__dict__, "id": "c9", "foil": None})
    with pytest.raises(PromptFormatError, match="c9.*foil"):
        load_sets([bad])
    weak = Prompt(**{**CONFLICT.__dict__, "meta": {**CONFLICT.meta, "prior": "weak"}})
    with pytest.raises(PromptFormatError, match="no conflict prompts with meta.prior 'strong'"):
        load_sets([weak])
    sets = load_sets([CONFLICT])
    assert sets.strong == [CONFLICT] and sets.texts == [CONFLICT.context]


def test_gated_interventions_leave_prompts_without_context_alone(zoo_tiny):
    from alignloc.models.pair import load_model

    m = load_model("zoo:base")
    closed = Prompt(id="n1", kind="context", text="Question: What colour does Nafi like ? Answer:")
    prompts = [CONFLICT, closed]

    def kill_all(b):
        return [Scale(layer, c, 0.0) for layer in range(m.n_layers) for c in ("attn", "mlp")]

    plain, gated, always = top1(m, prompts, True), top1(m, prompts, True, kill_all, gated=True), top1(m, prompts, True, kill_all)
    assert gated[1] == plain[1] and always[1] != plain[1] and gated[0] == always[0]


@pytest.fixture(scope="module")
def cp_report(zoo_tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("cp")
    assert main(["context-prior", "zoo:base", "--out", str(out), "--layers", "0,3", "--no-heads"]) == 0
    return json.loads((out / "report.json").read_text()), out


def test_base_model_ignores_context_for_strong_priors(cp_report):
    r, _ = cp_report
    v = r["verdict"]
    base = r["rows"][0]
    assert base["name"] == "none" and v["strong_more_from_memory_than_weak"]
    assert base["memory_strong"] > 0.8 and base["follow_weak"] > 0.7 and v["baseline_rate"] < 0.2
    assert r["n"]["strong"] == 40 and r["n"]["weak"] == 80


def test_verdict_compares_interventions_with_prompt_only_fixes(cp_report):
    r, out = cp_report
    v = r["verdict"]
    assert 0.0 <= v["best_prompt_only_rate"] <= 1.0 and v["best_prompt_only"] in ("instruction", "repeat_context", "context_after_question")
    best = v["best_intervention"]
    assert {"name", "layer", "strength"} <= set(best) and best["layer"] in (0, 3)
    # hiding the entity's identity from the computation flips strong-prior answers to the context ...
    assert v["best_intervention_rate"] >= v["best_prompt_only_rate"] + 0.5 and best["name"].startswith("unknown_subject")
    assert best["collateral"]["closed_drop"] <= 0.05 and best["collateral"]["agree_drop"] <= 0.05
    # ... and so does renaming the entity in the text, which the report names as an input rewrite
    assert next(x for x in r["rows"] if x["name"] == "anonymize_subject")["follow_strong"] >= 0.9
    ungated = [x for x in r["rows"] if x["name"] == best["name"] and x["layer"] == best["layer"] and not x["gated"]]
    assert ungated and ungated[0]["collateral"]["closed_drop"] > 0.3  # applied everywhere, it erases closed-book recall
    assert "best prompt-only fix" in (out / "summary.md").read_text()


def test_context_prior_result_round_trips(cp_report):
    """report.json read back as a ContextPriorResult gives the same dict; another version is refused."""
    from alignloc.report.results import ContextPriorResult, ResultSchemaError

    r, _ = cp_report
    typed = ContextPriorResult.from_json(r)
    assert typed.to_json() == r and list(typed.to_json()) == list(r) and typed.rows == r["rows"]
    assert ContextPriorResult.from_json(typed.to_json()) == typed
    with pytest.raises(ResultSchemaError, match="context-prior report has schema version 0"):
        ContextPriorResult.from_json({**r, "schema_version": 0})


def test_context_prior_returns_its_typed_result(zoo_tiny, tmp_path):
    """The function returns the ContextPriorResult whose to_json() is the file (JSON-safe)."""
    from alignloc.contextprior.data import load_sets
    from alignloc.experiments.contextprior import context_prior_report
    from alignloc.models.pair import load_model
    from alignloc.report import json_safe
    from alignloc.report.results import ContextPriorResult
    from alignloc.zoo import organism_prompts

    sets = load_sets(organism_prompts("base"))
    r = context_prior_report(load_model("zoo:base"), sets, tmp_path, bos=True, layers=[3], heads=False,
                             head_search=False, gate="context")
    assert isinstance(r, ContextPriorResult) and "conflicts" not in r
    assert json.loads((tmp_path / "report.json").read_text()) == json_safe(r)
    assert ContextPriorResult.from_json(r.to_json()) == r


def test_context_prior_report_renders(cp_report, tmp_path):
    _, out = cp_report
    dom = dom_in_chromium(out / "index.html", tmp_path)
    assert dom.count('class="main-svg"') >= 2


def test_context_prior_bad_prompt_file(tmp_path, capsys, zoo_tiny):
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"id": "x", "text": "Context: A . Q:", "kind": "context", "meta": {"condition": "conflict"}}) + "\n")
    assert main(["context-prior", "zoo:base", "--prompts", str(f), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "x" in err and "lacks" in err and not (tmp_path / "o").exists()
