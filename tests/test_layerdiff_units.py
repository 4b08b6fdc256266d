"""The pure parts of layer-diff against hand-computed answers, an identical pair, and a real browser."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from alignloc.analyses.lens import agreement_with_output, first_agreeing_layer
from alignloc.analyses.shift import cka_bootstrap, linear_cka
from alignloc.analyses.stats import background, bootstrap_indices, increments, mean_ci
from alignloc.analyses.verdict import VerdictConfig, flagged, floors
from alignloc.analyses.weights import module_of, weight_diff
from alignloc.experiments.layerdiff import layer_diff
from alignloc.models.families import FAMILIES
from alignloc.models.pair import load_pair
from alignloc.prompts import Prompt


def test_module_of_llama_and_gpt2_names():
    f = FAMILIES["llama"]
    assert module_of("model.layers.3.self_attn.q_proj.weight", f) == (3, "attn")
    assert module_of("model.layers.0.mlp.down_proj.weight", f) == (0, "mlp")
    assert module_of("model.layers.1.input_layernorm.weight", f) == (1, "norm")
    assert module_of("model.embed_tokens.weight", f) == (-1, "embed")
    assert module_of("lm_head.weight", f) == (-1, "unembed")
    assert module_of("transformer.h.2.ln_1.weight", FAMILIES["gpt2"]) == (2, "norm")


def test_weight_diff_hand_computed():
    f = FAMILIES["llama"]
    base = {"model.layers.0.mlp.w.weight": torch.ones(2, 2), "model.layers.1.self_attn.w.weight": torch.ones(4)}
    tuned = {"model.layers.0.mlp.w.weight": torch.ones(2, 2), "model.layers.1.self_attn.w.weight": torch.tensor([1.0, 1, 1, 3])}
    d = weight_diff(base, tuned, f, n_layers=2)
    assert d["identical_layers"] == [0] and d["changed_params"] == 1
    assert d["layers"][1]["relative_frobenius"] == pytest.approx(2 / 2)  # ||(0,0,0,2)|| / ||(1,1,1,1)||
    assert d["layers"][1]["modules"] == {"attn": pytest.approx(1.0)}
    with pytest.raises(ValueError, match="different parameter names"):
        weight_diff(base, {"x": torch.ones(1)}, f, 2)


def test_cka_invariances():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 16, generator=g)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g))
    assert linear_cka(x, 5 * x @ q + 3) == pytest.approx(1.0, abs=1e-9)  # rotation, scale, shift
    y = torch.randn(200, 16, generator=g)
    assert linear_cka(x, y) < 0.2


@pytest.mark.parametrize("d", [16, 300])  # fewer and more features than prompts
def test_cka_of_each_bootstrap_resample_from_the_grams_equals_resampling_rows(d):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(120, d, generator=g, dtype=torch.float64)
    x[:, 0] += 300  # a residual stream's large mean direction
    y = x + 0.7 * torch.randn(120, d, generator=g, dtype=torch.float64) + 2
    idx = bootstrap_indices(120, 40, seed=3)
    fast = cka_bootstrap(x, y, idx)
    slow = torch.tensor([linear_cka(x[i], y[i]) for i in idx], dtype=torch.float64)
    assert fast.shape == (40,) and float(slow.std()) > 1e-3  # the resamples differ
    torch.testing.assert_close(fast, slow, atol=1e-10, rtol=0)
    assert cka_bootstrap(x, x, idx).tolist() == pytest.approx([1.0] * 40, abs=1e-12)


def test_knowledge_preserved_within_both_tolerances():
    from alignloc.analyses.verdict import VerdictConfig
    from alignloc.analyses.verdict_text import knowledge_preserved

    cfg = VerdictConfig()  # 5 points of recall, 0.5 nats of log-prob lost

    def know(points, nats):
        return {"accuracy_delta": {"mean": points / 100}, "logprob_delta": {"mean": nats}}

    assert knowledge_preserved(None, cfg) is None
    assert knowledge_preserved(know(-4.9, -0.49), cfg) is True and knowledge_preserved(know(4.9, 3.0), cfg) is True
    assert knowledge_preserved(know(-5.1, 0.0), cfg) is False and knowledge_preserved(know(5.1, 0.0), cfg) is False
    assert knowledge_preserved(know(0.0, -0.51), cfg) is False  # gaining log-prob is not a loss


def test_lens_reductions():
    top1 = torch.tensor([[5, 1, 2], [7, 1, 2], [7, 3, 2], [7, 1, 2]])  # [layer, n]
    assert first_agreeing_layer(top1).tolist() == [1, 3, 0]
    assert agreement_with_output(top1).tolist() == pytest.approx([2 / 3, 1.0, 2 / 3, 1.0])


def test_stats_and_floors():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    ci = mean_ci(x, n_boot=500)
    assert ci["mean"] == 2.5 and 1.0 <= ci["lo"] < 2.5 < ci["hi"] <= 4.0
    assert mean_ci(x, n_boot=500, seed=3) == mean_ci(x, n_boot=500, seed=3)
    assert increments([1.0, 3.0, 3.5], start=0.5) == [0.5, 2.0, 0.5]
    assert background([0.0, 0.0, 1.0, 1.0]) == 0.0
    assert flagged({"lo": [0.2, -0.5, 0.0], "hi": [0.4, -0.3, 0.5]}, [0.1, 0.1, 0.1]) == [0, 1]
    lines = {"weights": {"mean": [0.05, 0.05, 0.05, 0.06], "lo": [0] * 4, "hi": [0] * 4}}
    # no control: a uniform change sets its own floor (3 x background), so no layer stands out
    assert floors(lines, None, VerdictConfig())["weights"][0] == pytest.approx(0.15)
    ctrl = {"weights": {"mean": [0.01] * 4, "lo": [0.01] * 4, "hi": [0.01] * 4}}
    assert floors(lines, ctrl, VerdictConfig())["weights"] == pytest.approx([0.015] * 4)


@pytest.fixture(scope="module")
def identical_report(llama_pair, tmp_path_factory):
    """layer-diff of a model against itself, with a prompt that tries to inject a script."""
    base, _ = llama_pair
    pair = load_pair(str(base), str(base))
    prompts = [Prompt(id=f"k{i}", text=f"the cat number {i} sat on", kind="knowledge", target=" the", label=f"c{i % 2}")
               for i in range(12)]
    prompts.append(Prompt(id="evil", text="<script>document.title='PWNED'</script> hello", kind="behavior", target=" x"))
    prompts.append(Prompt(id="b2", text="hello there friend", kind="behavior", target=" x"))
    out = tmp_path_factory.mktemp("identical")
    return layer_diff(pair, prompts, out, n_boot=100, probes=True, causal=True), out


def test_identical_pair_is_null(identical_report):
    r, _out = identical_report
    v, m = r["verdict"], r["measures"]
    assert v["changed_layers"] == [] and v["kind"] == "none" and not v["distributed_weight_change"]
    assert m["weights"]["identical_layers"] == list(range(r["pair"]["n_layers"]))
    assert max(m["shift"]["relative_l2"]["mean"]) == 0.0 and max(m["lens"]["kl"]["mean"]) < 1e-6
    assert m["outputs"]["knowledge"]["logprob_delta"]["mean"] == 0.0
    assert m["probes"]["knowledge"]["base"] == m["probes"]["knowledge"]["tuned"]
    c = json.loads((_out / "report.json").read_text())["causal"]["patch"]["knowledge"]
    assert c["patch"]["per_layer"]["mlp_out"]["gap"] == 0.0 and c["patch"]["grid"]["recovered"][0][0] is None
    assert "corrupt_text" in c["within"]["skipped"]  # these prompts have none: said, not crashed


def test_layer_diff_result_round_trips_and_is_report_json(identical_report):
    """The typed result is report.json: to_json() written through json_safe is the file, byte for byte;
    from_json reads the file and the in-memory dict back; another schema version is refused by name."""
    from alignloc.report import json_safe
    from alignloc.report.results import LayerDiffResult, ResultSchemaError

    r, out = identical_report
    assert isinstance(r, LayerDiffResult) and r.verdict is r["verdict"] and "causal" in r and "answers" not in r
    text = (out / "report.json").read_text()
    assert text == json.dumps(json_safe(r), indent=1, allow_nan=False)
    assert LayerDiffResult.from_json(r.to_json()) == r
    data = json.loads(text)
    assert list(data) == list(r.to_json()) and LayerDiffResult.from_json(data).to_json() == data
    with pytest.raises(ResultSchemaError, match="schema version 1 .*reads version 2"):
        LayerDiffResult.from_json({**data, "schema_version": 1}, source="old/report.json")
    with pytest.raises(ResultSchemaError, match="unknown key.*_out"):
        LayerDiffResult.from_json({**data, "_out": "x"})
    with pytest.raises(ResultSchemaError, match="missing key.*verdict"):
        LayerDiffResult.from_json({k: v for k, v in data.items() if k != "verdict"})


def test_layer_diff_config_and_its_keywords_are_one_thing():
    from alignloc.analyses.verdict import VerdictConfig
    from alignloc.layerdiff.config import LayerDiffConfig

    cfg = LayerDiffConfig.build(LayerDiffConfig(n_boot=200, causal=True), windows=[2, 1], seed=3)
    assert cfg == LayerDiffConfig(n_boot=200, causal=True, windows=(2, 1), seed=3) and cfg.windows == (2, 1)
    with pytest.raises(TypeError, match="unknown setting.*n_bot"):
        LayerDiffConfig.build(n_bot=10)
    with pytest.raises(TypeError, match="LayerDiffConfig\\(verdict=VerdictConfig"):
        LayerDiffConfig.build(VerdictConfig())
    with pytest.raises(ValueError, match="n_boot must be >= 1"):
        LayerDiffConfig(n_boot=0)


def test_layer_diff_takes_a_config_as_its_keywords(llama_pair, tmp_path):
    """layer_diff(config=LayerDiffConfig(...)) and the keyword form measure the same (report timestamps aside)."""
    from alignloc.layerdiff.config import LayerDiffConfig

    pair = load_pair(*map(str, llama_pair), device="cpu")
    prompts = [Prompt(id=f"k{i}", text=f"the cat number {i} sat on", kind="knowledge", target=" the") for i in range(6)]
    a = layer_diff(pair, prompts, tmp_path / "a", LayerDiffConfig(n_boot=20, probes=False, what_changed=False, seed=1),
                   write=False)
    b = layer_diff(pair, prompts, tmp_path / "b", n_boot=20, probes=False, what_changed=False, seed=1, write=False)
    assert a.settings == b.settings == {"n_boot": 20, "seed": 1, "backend": "hf", "positions": "last"}
    from alignloc.report import json_safe

    assert json_safe(a.measures) == json_safe(b.measures) and "what_changed" not in a.measures


def test_prompt_text_is_escaped(identical_report):
    _, out = identical_report
    html = (out / "index.html").read_text()
    assert "<script>document.title" not in html and "&lt;script&gt;document.title" in html
    assert json.loads((out / "report.json").read_text())["prompts"]["n"] == 14


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def dom_in_chromium(page: Path, tmp_path: Path) -> str:
    """Open ``page`` in headless Chromium; fail on any console error; return the rendered DOM."""
    browser = _chromium()
    if browser is None:
        if os.environ.get("ALIGNLOC_NO_BROWSER"):
            pytest.skip("ALIGNLOC_NO_BROWSER set")
        pytest.fail("headless Chromium is needed for this test: apt-get install chromium (see .ci/run)")
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
           "--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri()]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    console_errors = [ln for ln in r.stderr.splitlines() if "CONSOLE" in ln and ("Error" in ln or "Uncaught" in ln)]
    assert not console_errors, console_errors
    return r.stdout


def test_report_opens_in_headless_chromium(identical_report, tmp_path):
    """The page renders its plotly figures with no JavaScript error, and the injected script never runs."""
    _, out = identical_report
    dom = dom_in_chromium(out / "index.html", tmp_path)
    assert dom.count('class="main-svg"') >= 5, "plotly drew the figures"
    assert "PWNED" not in dom.split("<body")[0], "the prompt's script did not run"


@pytest.mark.parametrize("arch", ["gpt2", "qwen2", "gemma2", "gpt_neox"])
def test_layer_diff_runs_on_every_family(arch, arch_pairs, tmp_path):
    """Two unrelated random inits: every layer's weights differ, and the lens at the last layer is
    each model's own output (KL there equals the KL of the two models' real next-token outputs)."""
    base, tuned = arch_pairs[arch]
    pair = load_pair(str(base), str(tuned))
    prompts = [Prompt(id=f"p{i}", text=f"a b c {i} d e", kind="knowledge" if i % 2 else "behavior", target=" e")
               for i in range(10)]
    r = layer_diff(pair, prompts, tmp_path, n_boot=50, probes=False, write=False)
    n = pair.n_layers
    assert [x["identical"] for x in r["measures"]["weights"]["layers"]] == [False] * n
    enc = pair.tokenizer(prompts[0].text, return_tensors="pt", add_special_tokens=False)
    from alignloc.tokens import default_bos

    ids = enc["input_ids"]
    if default_bos(pair.tokenizer, pair.base.config.model_type):
        ids = torch.cat([torch.tensor([[pair.tokenizer.bos_token_id]]), ids], dim=1)
    with torch.no_grad():
        lb = torch.log_softmax(pair.base.model(input_ids=ids).logits[0, -1].float(), -1)
        lt = torch.log_softmax(pair.tuned.model(input_ids=ids).logits[0, -1].float(), -1)
    kl = float((lb.exp() * (lb - lt)).sum())
    collected_kl = r["measures"]["lens"]["kl_by_kind"]["behavior"]["mean"][-1]  # prompts 0, 2, ... are behavior
    assert kl > 0 and collected_kl > 0
    from alignloc.layerdiff.collect import collect

    data = collect(pair, prompts[:1], tmp_path / "one")
    assert float(data.lens["kl"][-1, 0]) == pytest.approx(kl, rel=1e-4, abs=1e-5)


def test_skipped_within_model_patching_is_said_on_the_console_and_in_index_html(llama_pair, tmp_path, capsys):
    """A corrupt_text of another token length skips within-model patching (the rest of --causal runs): one
    warning line on stderr and a line in index.html say why, not only report.json and summary.md."""
    from alignloc.cli import main

    recs = [{"id": f"k{i}", "text": f"the cat number {i} sat on", "kind": "knowledge", "target": " the"} for i in range(4)]
    recs += [{"id": f"b{i}", "text": f"hello there friend {i}", "kind": "behavior", "target": " x"} for i in range(4)]
    recs[5]["corrupt_text"] = "a dog"  # b1: fewer tokens than its text
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = tmp_path / "r"
    rc = main(["layer-diff", *map(str, llama_pair), "-p", str(tmp_path / "p.jsonl"), "--control", "none", "--causal",
               "--no-probes", "--n-boot", "20", "--mask-steps", "0", "--windows", "1", "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 0, err
    reason = json.loads((out / "report.json").read_text())["causal"]["patch"]["behavior"]["within"]["skipped"]
    assert reason.startswith("prompt 'b1': 'corrupt_text' has ")
    warnings = [ln for ln in err.splitlines() if ln.startswith("alignloc: warning: ")]
    assert warnings == [f"alignloc: warning: within-model patching skipped on the behavior prompts: {reason} "
                        f"(the rest of the report is complete; see {out / 'index.html'})"], err
    page = (out / "index.html").read_text()
    assert "Within-model patching skipped on the behavior prompts: prompt &#x27;b1&#x27;" in page


def test_the_window_triage_follows_the_verdicts_carrier_bar(llama_pair, tmp_path):
    """A verdict whose carriers need less than half the gap (``VerdictConfig.carrier_at``) gets the windows it reads:
    the triage reverts every wider window that brings that much, and the localization's carrier uses the same bar."""
    from alignloc.analyses.verdict import VerdictConfig
    from alignloc.experiments.layerdiff import layer_diff
    from alignloc.models.pair import load_pair
    from alignloc.prompts import Prompt

    pair = load_pair(*map(str, llama_pair), device="cpu")
    ps = [Prompt(f"b{i}", f"hello there friend {i}", "behavior", target=" x") for i in range(8)]
    for bar, at in ((0.3, 0.3), (0.9, 0.5)):
        rep = layer_diff(pair, ps, tmp_path / str(bar), write=False, n_boot=20, probes=False, causal=True, budget="quick",
                         verdict=VerdictConfig(carrier_at=bar))
        loc = rep["causal"]["localize"]["behavior"]
        assert loc["windows"]["necessity_at"] == at and loc["carrier_at"] == bar


def test_the_quick_budget_runs_what_its_plan_says(llama_pair, tmp_path, capsys):
    """--budget quick: windows of 1 and 2 layers, no mask, at most 32 prompts per kind; the plan printed first
    counts the passes the run records."""
    from alignloc.causal.budget import BUDGETS, get, patch_cells, plan
    from alignloc.cli import main

    recs = [{"id": f"b{i}", "text": f"hello there friend {i}", "kind": "behavior", "target": " x"} for i in range(40)]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = tmp_path / "r"
    assert main(["layer-diff", *map(str, llama_pair), "-p", str(tmp_path / "p.jsonl"), "--control", "none", "--causal",
                 "--no-probes", "--n-boot", "20", "--budget", "quick", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    rep = json.loads((out / "report.json").read_text())
    loc, p = rep["causal"]["localize"]["behavior"], rep["causal"]["plan"]
    assert p["budget"] == "quick" and "causal budget 'quick'" in err and "min in all" in err
    assert loc["n"] == 32 == p["behavior"]["n_prompts"] and "mask" not in loc
    n = rep["pair"]["n_layers"]
    win = loc["windows"]  # every window's sufficiency, each layer's necessity, and the wider windows it confirms
    assert win["sizes"] == [1, 2] and p["behavior"]["windows"] == 2 + (2 * n - 1) + n
    assert win["passes"] == p["behavior"]["windows"] + win["confirmed"] and win["necessity_at"] == 0.5
    # quick patches only what the verdict reads: each block's attention, MLP and residual output, tuned into base
    assert rep["causal"]["patch"] == {} and p["patching"] == [{"prompts": "behavior", "n_prompts": 32, "cells": 3 * n}]
    assert set(loc["patching"]) == {"attn_out", "mlp_out", "resid_increment", "gap"} and len(loc["patching"]["mlp_out"]) == n
    assert f"patching, behavior (32 prompts): {3 * n} cells" in err
    assert patch_cells(30, False, 12) == 90 and patch_cells(30, True, 12) == 180 + 360
    assert patch_cells(30, True, 12, triage=True) == 90 + 3 * 10 + 10 * 4  # a third of the layers; grid: 40 cells
    assert patch_cells(30, True, 12, triage=True, verdict_reads=False) == 3 * 10 + 3 * 10 + 10 * 4
    assert patch_cells(4, True, 12, triage=True) == patch_cells(4, True, 12)  # every layer of a 4-layer model
    assert plan(30, [1, 2, 4], 100, 64) == {"n_prompts": 64, "n_layers": 30, "sizes": [1, 2, 4], "windows": 2 + 2 * (30 + 29 + 27),
                                            "windows_confirm": 0, "mask": 2 * 4 + 100 * 4, "profile": 62, "profile_k": 30}
    tri = plan(30, [1, 2, 4], 100, 64, triage=True)  # each layer's necessity; the wider windows' once confirmed
    assert tri["windows"] == 2 + (30 + 29 + 27) + 30 and tri["windows_confirm"] == 29 + 27
    assert tri["profile"] == 2 + 2 * 15 and tri["profile_k"] == 15  # the sets of up to half the layers
    assert get("thorough").window_sizes(10) == [1, 2, 3, 4, 5] and get("standard").window_sizes(10) == [1, 2, 4]
    assert set(BUDGETS) == {"quick", "standard", "thorough"}
    assert main(["layer-diff", *map(str, llama_pair), "-p", str(tmp_path / "p.jsonl"), "--causal", "--budget", "huge",
                 "-o", str(tmp_path / "x")]) == 2
    assert "--budget: 'huge' is not one of quick, standard, thorough" in capsys.readouterr().err
