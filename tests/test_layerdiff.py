"""layer-diff on the model organisms: the verdict must find what was planted, and nothing in the control."""

from __future__ import annotations

import json

import pytest

from alignloc.cli import main
from alignloc.experiments.layerdiff import default_control, layer_diff
from alignloc.models.pair import load_pair
from alignloc.zoo import organism_prompts
from tests.test_layerdiff_units import dom_in_chromium

N_BOOT = 300


@pytest.fixture(scope="module")
def reports(zoo_tiny, tmp_path_factory):
    """Lazily computed layer-diff reports per organism (with the zoo's control as noise floor)."""
    cache: dict[str, dict] = {}

    def get(name: str, probes: bool = False) -> dict:
        if name not in cache:
            pair = load_pair(f"zoo:{name}")
            out = tmp_path_factory.mktemp(name)
            report = layer_diff(pair, organism_prompts(name), out, control=default_control(pair),
                                n_boot=N_BOOT, probes=probes)
            cache[name] = {**report.to_json(), "_out": out}
        return cache[name]

    return get


def test_control_continued_has_no_localized_change(reports):
    r = reports("control-continued")
    v = r["verdict"]
    assert r["control"] is None, "the control organism is not its own control"
    assert v["changed_layers"] == [] and v["behavior_layers"] == [] and v["knowledge_layers"] == []
    assert v["distributed_weight_change"], "continued pretraining moved every layer a little"
    w = [x["relative_frobenius"] for x in r["measures"]["weights"]["layers"]]
    assert all(0.01 < x < 0.2 for x in w) and max(w) / min(w) < 2


def test_chat_sft_upper_points_to_the_trained_top_layers(reports):
    r = reports("chat-sft-upper", probes=True)
    v, m = r["verdict"], r["measures"]
    planted = r["ground_truth"]["layers"]
    assert planted == [2, 3]
    assert r["control"] is not None and v["floor_source"] == "control pair"
    assert v["flags"]["weights"] == planted
    assert m["weights"]["identical_layers"] == [0, 1]
    assert v["changed_layers"] == planted and v["behavior_layers"] == planted
    # shift and lens: nothing below the planted layers, the largest increments inside them
    for line in ("representation", "lens"):
        assert set(v["flags"][line]) <= set(planted), line
    inc = m["shift"]["relative_l2_increment"]["mean"]
    assert inc[0] == inc[1] == 0.0 and min(inc[2], inc[3]) > 0.3
    # knowledge mostly kept: any fact movement stays inside the trained layers and recall moves by
    # under 10 points (measured -6.5 pt [-9.4, -3.7] on this zoo build: just over the verdict's 5-point
    # "preserved" bar; an earlier build measured -4.6 pt), and probes keep their accuracy
    assert set(v["knowledge_layers"]) <= set(planted)
    assert abs(m["outputs"]["knowledge"]["accuracy_delta"]["mean"]) < 0.10
    assert m["outputs"]["behavior"]["logprob_delta"]["lo"] > 10
    kp = m["probes"]["knowledge"]
    assert max(abs(a - b) for a, b in zip(kp["base"], kp["tuned"], strict=True)) < 0.1
    assert min(kp["selectivity_base"]) > 0


def test_fact_edit_reports_knowledge_change_at_its_layer(reports):
    r = reports("fact-edit-L1")
    v = r["verdict"]
    k = r["ground_truth"]["layers"]
    assert k == [1]
    assert v["changed_layers"] == k and v["knowledge_layers"] == k
    assert v["behavior_layers"] == []
    e = next(e for e in v["evidence"] if e["line"] == "knowledge" and e["layer"] == 1)
    assert e["value"] > 0 and e["ci"][0] > e["floor"], "edited facts gain log-prob at the edited layer"


def test_chat_sft_lower_damages_knowledge_more_than_upper(reports):
    lo, up = reports("chat-sft-lower"), reports("chat-sft-upper")
    dl = lo["measures"]["outputs"]["knowledge"]["accuracy_delta"]
    du = up["measures"]["outputs"]["knowledge"]["accuracy_delta"]
    # the claim is the order; its margin is the build's (knowledge accuracy delta, lower vs upper: -0.104 vs -0.075
    # on the one-training-thread build, a wider gap on the default and AVX2 ones: retention 0.74 / 0.80 vs 0.89 / 0.90)
    assert dl["mean"] < du["mean"], (dl, du)
    assert lo["verdict"]["changed_layers"] == [0, 1] == lo["ground_truth"]["layers"]
    assert lo["verdict"]["knowledge_layers"], "the lower edit moves fact log-probs at its layers"
    assert set(lo["verdict"]["knowledge_layers"]) <= {0, 1}
    assert lo["verdict"]["knowledge_preserved"] is False


def test_report_files_round_trip(reports):
    r = reports("chat-sft-upper", probes=True)
    out = r["_out"]
    data = json.loads((out / "report.json").read_text())  # strict JSON: no NaN
    assert data["schema_version"] == 2
    assert data["verdict"]["behavior_layers"] == r["verdict"]["behavior_layers"]
    md = (out / "summary.md").read_text()
    assert "## Verdict" in md and "layers 2-3" in md
    html = (out / "index.html").read_text()
    assert "Plotly.newPlot" in html and "<script src=" not in html, "plotly.js is inlined, nothing is fetched"


def test_second_run_reuses_the_store(zoo_tiny, tmp_path):
    pair = load_pair("zoo:fact-edit-L1")
    prompts = organism_prompts("fact-edit-L1")[:40]
    store = tmp_path / "acts"
    layer_diff(pair, prompts, tmp_path / "r1", store=store, n_boot=50, probes=False)
    stamp = {p: p.stat().st_mtime_ns for p in store.rglob("*.safetensors")}
    r2 = layer_diff(pair, prompts, tmp_path / "r2", store=store, n_boot=50, probes=False)
    assert stamp and {p: p.stat().st_mtime_ns for p in store.rglob("*.safetensors")} == stamp
    assert r2["prompts"]["store"] == str(store)


def test_cli_layer_diff_on_an_organism_without_prompt_file(zoo_tiny, tmp_path, capsys):
    out = tmp_path / "rep"
    code = main(["layer-diff", "zoo:refusal-lora-L2", "--out", str(out), "--n-boot", "100", "--no-probes", "--causal"])
    assert code == 0
    cap = capsys.readouterr()
    assert "layer 2" in cap.out and "[alignloc] causal budget 'standard'" in cap.err
    rep = json.loads((out / "report.json").read_text())
    plan, ran = rep["causal"]["plan"]["behavior"], rep["causal"]["localize"]["behavior"]
    # the plan printed before the run counts the passes each stage then records
    assert plan["windows"] + ran["windows"]["confirmed"] == ran["windows"]["passes"]  # + the wider windows reverted
    assert ran["windows"]["confirmed"] <= plan["windows_confirm"] and plan["mask"] == ran["mask"]["passes"]["forward"]
    # the profile grafts the sets the verdict reads: up to half the layers, or the mask's selection if larger
    assert plan["profile_k"] == 2 == len(ran["profile"]["sets"]) and ran["profile"]["max_k"] == 2
    assert ran["profile"]["passes"] == plan["profile"] + 2 * max(0, len(ran["mask"]["selected"]) - plan["profile_k"])
    assert rep["verdict"]["changed_layers"] == [2] and rep["verdict"]["behavior_layers"] == [2]
    assert rep["verdict"]["behavior"]["basis"] == "causal"
    loc = rep["causal"]["localize"]["behavior"]
    g = loc["windows"]["windows"]["1"]
    assert g["sufficiency"][2] >= 0.7 and max(abs(g["sufficiency"][i]) for i in (0, 1, 3)) < 0.05
    assert loc["carrier"]["layers"] == [2] and loc["mask"]["selected"] == [2]
    assert "Graft windows" in (out / "summary.md").read_text()
    c = rep["causal"]["patch"]["behavior"]
    mlp, kept = c["patch"]["per_layer"]["mlp_out"], c["patch"]["kept"]["mlp_out"]
    assert max(range(4), key=lambda i: mlp["recovered"][i]) == 2 and mlp["recovered"][2] > 0.8
    assert kept["recovered"][2] < 0.9 and kept["gap"] == pytest.approx(-mlp["gap"], rel=1e-5)  # reverting it loses the most
    assert c["attribution"]["spearman_vs_exact"] >= 0.8
    grid = c["patch"]["grid"]
    assert grid["tokens"][-1] == ":" and max(map(abs, sum(grid["recovered"][:3], []))) < 0.05  # nothing before layer 2
    for side in ("base", "tuned"):  # clean-vs-corrupt entity: layer 0 reads the entity, later layers the last token
        w = c["within"][side]["recovered"]
        # resid_pre of the last layer at the last token: its attention still reads the corrupted entity, so it
        # recovers about all of it, not exactly all (1.12 on the one-training-thread build)
        assert w[-1][-1] == pytest.approx(1.0, abs=0.2) and abs(w[-1][0]) < 0.01
    assert "resid_pre, within tuned" in (out / "summary.md").read_text()
    dom = dom_in_chromium(out / "index.html", tmp_path)
    assert dom.count('class="main-svg"') >= 12
