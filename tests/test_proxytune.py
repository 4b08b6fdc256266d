"""The proxy-tune experiment on the zoo: one command, real generations, the report and its verdict."""

from __future__ import annotations

import json

import pytest

from alignloc.cli import main
from tests.test_layerdiff_units import dom_in_chromium


@pytest.fixture(scope="module")
def pt(zoo_tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("pt")
    assert main(["proxy-tune", "--zoo", "--out", str(out)]) == 0
    return json.loads((out / "report.json").read_text()), out


def test_numbers_come_from_real_generations(pt, zoo_tiny):
    from alignloc import zoo
    from alignloc.models.pair import load_model

    r, _ = pt
    c = r["configs"]
    # the small tuned model's rates equal what the zoo measured on its saved checkpoint when it was built
    measured = zoo.resolve("chat-sft-full").ground_truth["measured"]["tuned"]
    assert c["small tuned"]["behavior_rate"] == pytest.approx(measured["format_rate"], abs=1e-3)
    assert c["small tuned"]["fact_recall_strong"] == pytest.approx(measured["fact_recall_strong"], abs=1e-3)
    assert c["small tuned"]["fact_recall_weak"] == pytest.approx(measured["fact_recall_weak"], abs=1e-3)
    # and every behavior rate is the share of stored generations that start with the marker
    tok = load_model("zoo:base").tokenizer
    marker = tok.decode(tok.encode(" Sure!", add_special_tokens=False))
    for name, row in c.items():
        gens = row["generations"]
        assert len(gens) == r["n"]["behavior"]
        assert row["behavior_rate"] == pytest.approx(sum(g.startswith(marker) for g in gens) / len(gens)), name


def test_beta_dial_and_the_verdict(pt):
    r, _ = pt
    c, v = r["configs"], r["verdict"]
    same = ("fact_recall", "fact_recall_strong", "fact_recall_weak", "behavior_rate", "generations")
    assert {k: c["proxy beta=0"][k] for k in same} == {k: c["large base"][k] for k in same}  # beta = 0 is the large base
    # the dial rises up to beta = 1 on every build (default: 0 / 0.11 / 0.68; AVX2 one-thread: 0 / 0.10 / 0.86);
    # past it, not always (beta = 1.5: 0.91 default, 0.81 AVX2), so monotone_in_beta is reported, not asserted
    rates = [c[f"proxy beta={b}"]["behavior_rate"] for b in ("0", "0.5", "1")]
    assert rates[0] < rates[1] < rates[2] and c["proxy beta=1.5"]["behavior_rate"] > rates[1]
    assert v["monotone_in_beta"] == all(a <= b for a, b in zip(rates + [c["proxy beta=1.5"]["behavior_rate"]],
                                                                rates[1:] + [c["proxy beta=1.5"]["behavior_rate"]]))
    # gap closed at beta = 1 on three builds: 0.68 default, 0.58 one training thread, 0.86 AVX2 one thread
    assert 0.5 <= v["behavior_gap_closed"] <= 1.0
    assert v["knowledge_delta_vs_large_base"] == pytest.approx(c["proxy beta=1"]["fact_recall"] - c["large base"]["fact_recall"])
    assert c["large tuned (weights)"]["behavior_rate"] > 0.9 and v["direct_knowledge_delta_vs_large_base"] < 0
    s = r["shift"]
    assert s["fact_positions"] + s["style_positions"] == s["positions"] > 0 and 0 < s["changed_fraction"] < 1
    assert set(r["eft_grid"]) == {"small pretraining, small fine-tuning", "large pretraining, small fine-tuning (emulated)",
                                  "small pretraining, large fine-tuning (emulated)", "large pretraining, large fine-tuning"}
    assert r["weight_finetuning_layer_diff"]["knowledge_top1_tuned"] < r["weight_finetuning_layer_diff"]["knowledge_top1_base"]


def test_proxy_tune_report_renders(pt, tmp_path):
    _, out = pt
    assert "Emulated fine-tuning grid" in (out / "summary.md").read_text()
    assert (out / "large-layer-diff" / "index.html").is_file()
    assert dom_in_chromium(out / "index.html", tmp_path).count('class="main-svg"') >= 1


def test_proxy_tune_result_round_trips(zoo_tiny, tmp_path):
    """A small real run (four prompts of each kind, betas 0 and 1, no large twin): proxy_tune_report returns a
    ProxyTuneResult whose to_json() is the report.json written; it reads back; another version is refused."""
    from alignloc.experiments.proxytune import proxy_tune_report
    from alignloc.models.pair import load_model
    from alignloc.report import json_safe
    from alignloc.report.results import ProxyTuneResult, ResultSchemaError
    from alignloc.zoo import organism_prompts

    prompts = organism_prompts("chat-sft-full")
    few = [p for p in prompts if p.kind == "knowledge" and p.target][:4] + [p for p in prompts if p.kind == "behavior" and p.target][:4]
    lb, sb, st = (load_model(f"zoo:{n}") for n in ("base-large", "base", "chat-sft-full"))
    r = proxy_tune_report(lb, sb, st, few, tmp_path, True, betas=(0.0, 1.0))
    assert isinstance(r, ProxyTuneResult) and r.eft_grid is None and "contrast" not in r and r.n == {"knowledge": 4, "behavior": 4}
    data = json.loads((tmp_path / "report.json").read_text())
    assert data == json_safe(r) and list(data) == list(r)
    assert ProxyTuneResult.from_json(r.to_json()) == r and ProxyTuneResult.from_json(data).to_json() == data
    with pytest.raises(ResultSchemaError, match="proxy-tune report has schema version 2"):
        ProxyTuneResult.from_json({**data, "schema_version": 2})


def test_proxy_tune_needs_three_models(capsys):
    assert main(["proxy-tune", "--large-base", "x"]) == 2
    assert "--small-base" in capsys.readouterr().err


def test_a_tokenizer_mismatch_is_found_before_any_zoo_model_is_built(llama_pair, tmp_path, capsys, monkeypatch):
    """--large-base zoo:base-large with local small models of another vocabulary: one error line from the
    tokenizers alone; the zoo is neither built nor written, no model is loaded, no report folder made."""
    import alignloc.models.pair as pair_mod
    import alignloc.zoo as zoo_pkg
    import alignloc.zoo.registry as registry
    from tests.hostile_inputs import GOOD, assert_one_error, jsonl

    def forbidden(*args, **kwargs):
        raise AssertionError("built or loaded a model before checking the tokenizers")

    zoo = tmp_path / "zoo"
    monkeypatch.setenv("ALIGNLOC_ZOO", str(zoo))
    # the package first: its names load lazily from the registry, so patched after it, it would keep the patch
    for mod, name in ((zoo_pkg, "build"), (registry, "build"), (pair_mod, "_load")):
        monkeypatch.setattr(mod, name, forbidden)
    (tmp_path / "p.jsonl").write_text(jsonl(*GOOD))
    rc = main(["proxy-tune", "--large-base", "zoo:base-large", "--small-base", str(llama_pair[0]), "--small-tuned",
               str(llama_pair[1]), "-p", str(tmp_path / "p.jsonl"), "-o", str(tmp_path / "pt")])
    line = assert_one_error(rc, capsys.readouterr().err, f"--small-base {llama_pair[0]}: its tokenizer differs from that "
                                                         "of --large-base zoo:base-large (")
    assert "proxy-tuning needs one vocabulary" in line
    assert not zoo.exists() and not (tmp_path / "pt").exists()
