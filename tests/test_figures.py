"""Static figures: every result kind draws, exports as PDF/SVG/PNG, and bad inputs are clear errors."""

from __future__ import annotations

import json

import pytest

from alignloc.cli import main
from alignloc.report.figures import ResultError, figures_for, kind_of


@pytest.fixture(scope="module")
def layer_diff_report(zoo_tiny, tmp_path_factory):
    from alignloc.experiments.layerdiff import layer_diff
    from alignloc.models.pair import load_pair
    from alignloc.zoo import organism_prompts

    out = tmp_path_factory.mktemp("ld")
    layer_diff(load_pair("zoo:refusal-lora-L2"), organism_prompts("refusal-lora-L2"), out, n_boot=50, probes=True)
    return out / "report.json"


def test_figures_from_a_layer_diff_report(layer_diff_report, tmp_path, capsys):
    r = json.loads(layer_diff_report.read_text())
    assert kind_of(r) == "layer-diff"
    stems = [s for s, _ in figures_for(r)]
    assert stems[0] == "layerdiff_refusal-lora-L2" and any(s.startswith("probes_") for s in stems)
    fig = figures_for(r)[0][1]
    assert fig.layout.width == 687 and len(fig.layout.shapes) == 3  # two-column; planted layer 2 shaded in 3 panels
    assert main(["figures", str(layer_diff_report), "--out", str(tmp_path), "--format", "pdf,svg,png"]) == 0
    for ext, magic in (("pdf", b"%PDF"), ("svg", b"<svg"), ("png", b"\x89PNG")):
        data = (tmp_path / f"layerdiff_refusal-lora-L2.{ext}").read_bytes()
        assert magic in data[:200], ext
    assert "files in" in capsys.readouterr().out


def test_bad_results_are_clear_errors(tmp_path, capsys):
    assert main(["figures", str(tmp_path / "missing.json"), "--out", str(tmp_path)]) == 2
    assert "no such result" in capsys.readouterr().err
    bad = tmp_path / "x.json"
    bad.write_text('{"hello": 1}')
    assert main(["figures", str(bad), "--out", str(tmp_path)]) == 2
    assert "not an alignloc result" in capsys.readouterr().err
    assert main(["figures", str(bad), "--format", "gif"]) == 2
    with pytest.raises(ResultError):
        kind_of({})


def test_context_prior_results_are_compared_side_by_side(zoo_tiny, tmp_path):
    """Two context-prior results (e.g. the zoo and a real model) also give one figure with both."""
    from alignloc.contextprior.data import load_sets
    from alignloc.experiments.contextprior import context_prior_report
    from alignloc.models.pair import load_model
    from alignloc.report.figures import best_per_kind, context_prior_compare
    from alignloc.zoo import organism_prompts

    m, sets = load_model("zoo:base"), load_sets(organism_prompts("base"))
    paths = []
    for layer in (0, 3):
        out = tmp_path / f"cp{layer}"
        context_prior_report(m, sets, out, bos=True, layers=[layer], heads=False, gate="context")
        paths.append(out / "report.json")
    results = [json.loads(p.read_text()) for p in paths]
    fig = context_prior_compare(results)
    assert len(fig.data) == 4 and fig.data[0].type == "bar" and fig.data[1].type == "scatter"
    best = best_per_kind(results[1])
    assert list(fig.data[2].y) == [best[k]["follow_strong"] if best[k] else 0.0 for k in fig.data[2].x]
    anyway = best_per_kind(results[1], within_budget=False)
    assert best["baseline"]["name"] == "none" and anyway["head scaling"]["name"].startswith("scale_context_heads")
    assert main(["figures", str(paths[0]), str(paths[1]), "--out", str(tmp_path / "f"), "--format", "svg"]) == 0
    assert (tmp_path / "f" / "context_prior_compare.svg").read_bytes()[:200].find(b"<svg") >= 0


def test_without_chromium_the_browser_free_files_are_written_and_one_line_says_how_to_get_it(tmp_path, capsys,
                                                                                             monkeypatch):
    """kaleido finds no Chrome (as on a machine without chromium): the figures' HTML page and plotly JSON are
    written, then one error line says that static export needs Chromium and how to install it; exit 2, and the
    user's own file in the folder is untouched."""
    import plotly.io as pio
    from choreographer.browsers.chromium import Chromium

    monkeypatch.delenv("BROWSER_PATH", raising=False)
    monkeypatch.setattr(Chromium, "find_browser", classmethod(lambda cls, **kw: None))  # what kaleido searches with
    result = {"methods_run": ["m"], "tiers": {"easy": {"methods": {"m": {"hit@1_single_layer": 1.0, "hit@1": 1.0,
                                                                          "control_false_positives": 0.0}}}}}
    (tmp_path / "r.json").write_text(json.dumps(result))
    out = tmp_path / "figs"
    out.mkdir()
    (out / "mine.txt").write_text("precious")
    rc = main(["figures", str(tmp_path / "r.json"), "--out", str(out), "--overwrite"])
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]  # after the progress line naming the result read
    assert rc == 2 and err.count("alignloc: error: ") == 1 and line.startswith("alignloc: error: ") and "Traceback" not in err
    assert "static figures (pdf, svg, png) need Chromium" in line and "apt-get install chromium" in line
    assert "plotly_get_chrome" in line and f"wrote figures.html and 1 plotly JSON file in {out}" in line
    assert sorted(p.name for p in out.iterdir()) == [".alignloc-outputs", "figures.html", "localize_bench.json", "mine.txt"]
    assert (out / "mine.txt").read_text() == "precious"
    fig = pio.read_json(out / "localize_bench.json")  # exportable later: pio.write_image(fig, "x.pdf")
    assert fig.layout.width == figures_for(result)[0][1].layout.width
    page = (out / "figures.html").read_text()
    assert page.count('class="plotly-graph-div"') == 1 and "localize_bench" in page


def test_figures_without_results_run_the_missing_zoo_experiments_then_reuse_them(zoo_tiny, tmp_path, monkeypatch, capsys):
    """The paper-figure path (``alignloc figures --out DIR``) on one experiment, context-prior on ``zoo:base``
    at two layers without heads (the README shows the full command; its five experiments take a few CPU
    minutes): run into --cache, draw, and a second call reuses the result without running it again."""
    from alignloc.contextprior.data import load_sets
    from alignloc.experiments import paper
    from alignloc.experiments.contextprior import context_prior_report
    from alignloc.models.load_options import LoadOptions
    from alignloc.models.pair import load_model
    from alignloc.zoo import organism_prompts

    placements = []

    def context_prior(out, options):
        placements.append(options)
        sets = load_sets(organism_prompts("base"))
        context_prior_report(load_model("zoo:base", options), sets, out, bos=True, layers=[0, 3], heads=False,
                             head_search=False)

    monkeypatch.setattr(paper, "EXPERIMENTS", {"context-prior": context_prior})
    cache = tmp_path / "results"
    assert main(["figures", "--out", str(tmp_path / "a"), "--cache", str(cache), "--format", "png", "--device", "cpu",
                 "--compute-dtype", "float32"]) == 0
    assert "context-prior: running" in capsys.readouterr().err
    assert placements == [LoadOptions(device="cpu", compute_dtype="float32")]  # the options reach the run
    stamp = (cache / "context-prior" / "report.json").stat().st_mtime_ns
    assert main(["figures", "--out", str(tmp_path / "b"), "--cache", str(cache), "--format", "png"]) == 0
    second = capsys.readouterr().err
    assert "context-prior: reusing" in second and "running" not in second
    assert (cache / "context-prior" / "report.json").stat().st_mtime_ns == stamp
    a, b = (sorted(p.name for p in (tmp_path / d).glob("*.png")) for d in "ab")
    assert a == b == ["context_prior.png"]
