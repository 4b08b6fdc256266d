"""Surfaced vs installed: the pure measure on constructed tensors, then on the format organisms."""

from __future__ import annotations

import pytest
import torch

from alignloc.analyses.surfacing import (
    SurfacingConfig,
    amplification,
    behavior_subspace,
    energy_share,
    label_layer,
    layer_surfacing,
    placebo_null,
    random_subspace_null,
    surfacing_by_layer,
    surfacing_verdict,
)
from tests.conftest import tiny_zoo_with

D, N = 32, 40


def _demo(seed: int = 0, gap: float = 3.0):
    """Matched demo/plain residuals whose mean difference is ``gap`` along e0 (+ small noise)."""
    g = torch.Generator().manual_seed(seed)
    plain = torch.randn(N, D, generator=g)
    demo = plain + 0.1 * torch.randn(N, D, generator=g)
    demo[:, 0] += gap
    return demo, plain


def test_subspace_is_orthonormal_and_starts_with_the_behavior_direction():
    demo, plain = _demo()
    q, g = behavior_subspace(demo, plain, k=4)
    assert q.shape == (D, 4)
    assert torch.allclose(q.T @ q, torch.eye(4, dtype=q.dtype), atol=1e-9)
    assert q[0, 0] > 0.99  # column 0 is the mean difference's direction (e0)
    assert g[0] == pytest.approx(3.0, abs=0.1)


def test_share_inside_is_one_orthogonal_is_zero_and_scaling_is_amplification():
    demo, plain = _demo()
    q, g = behavior_subspace(demo, plain, k=4)
    inside = 2.5 * g  # the tuned model moves 2.5x as far as a demonstration moves the base
    assert energy_share(inside, q) == pytest.approx(1.0, abs=1e-9)
    assert amplification(inside, g) == pytest.approx(2.5, abs=1e-9)
    ortho = torch.zeros(D, dtype=torch.float64)
    ortho[5:] = 1.0
    ortho -= q @ (q.T @ ortho)  # remove any component in the subspace
    assert energy_share(ortho, q) == pytest.approx(0.0, abs=1e-12)
    assert amplification(ortho, g) == pytest.approx(0.0, abs=1e-9)
    half = g / g.norm() + ortho / ortho.norm()  # equal energy inside and outside
    assert energy_share(half, q) == pytest.approx(0.5, abs=1e-9)


def test_random_subspace_null_has_mean_k_over_d():
    x = torch.randn(D, generator=torch.Generator().manual_seed(1))
    null = random_subspace_null(x, k=4, n=2000, seed=0)
    assert null.mean().item() == pytest.approx(4 / D, abs=0.01)
    assert torch.equal(null, random_subspace_null(x, k=4, n=2000, seed=0))  # seeded


def test_placebo_null_does_not_find_the_behavior_direction():
    demo, plain = _demo()
    e0 = torch.eye(D, dtype=torch.float64)[0]
    null = placebo_null(e0, demo, plain, k=4, n=200, seed=0)
    assert torch.quantile(null, 0.95).item() < 0.5  # within-class contrasts lose e0 (true subspace: share 1)
    # ... but follow the base's variance: a shift along its high-variance direction lands in them
    plain[:, 9] *= 10
    demo[:, 9] = plain[:, 9]
    e9 = torch.eye(D, dtype=torch.float64)[9]
    assert placebo_null(e9, demo, plain, k=4, n=50, seed=0).mean().item() > 0.9


def test_layer_labels_and_verdict_on_constructed_shifts():
    demo, plain = _demo()
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(N, D, generator=gen)
    cfg = SurfacingConfig(n_null=200)
    surfaced = layer_surfacing(base, base + torch.tensor([4.0] + [0.0] * (D - 1)), demo, plain, cfg)
    assert surfaced["share"] > 0.99 and surfaced["amplification"] == pytest.approx(4 / 3, rel=0.05)
    assert label_layer(surfaced) == "surfaced"
    new = torch.zeros(D)
    new[7] = 4.0  # a direction the demonstrations never move
    installed = layer_surfacing(base, base + new, demo, plain, cfg)
    # below the floor: the measure cannot tell it from the nulls, which is not evidence of installation
    assert installed["share"] < installed["floor"] and label_layer(installed) == "no evidence"
    assert surfaced["share_ci"][0] > surfaced["floor"] and installed["share_ci"][0] <= installed["floor"]
    stack = lambda *xs: torch.stack(xs)  # noqa: E731
    res = surfacing_by_layer(stack(base, base), stack(base + new, base + 4 * torch.eye(D)[0]),
                             stack(demo, demo), stack(plain, plain), cfg)
    assert res["verdict"]["layer_labels"] == ["no evidence", "surfaced"]
    assert res["verdict"]["label"] == "mixed"  # one layer each: no majority
    assert surfacing_verdict([installed, installed, surfaced])["label"] == "mixed"
    assert surfacing_verdict([installed, installed])["label"] == "no evidence of surfacing"
    assert surfacing_verdict([surfaced, surfaced, installed])["label"] == "surfaced"


def test_identical_pair_is_not_surfaced():
    demo, plain = _demo()
    base = torch.randn(N, D, generator=torch.Generator().manual_seed(4))
    row = layer_surfacing(base, base.clone(), demo, plain, SurfacingConfig(n_null=50))
    assert row["share"] == 0.0 and label_layer(row) == "no shift"
    v = surfacing_verdict([row, row])
    assert v["label"] == "no evidence of surfacing" and v["layer_labels"] == ["no shift", "no shift"]


# ---- the format organisms: the measure must separate surfaced from installed ----------------------


@pytest.fixture(scope="module")
def format_zoo():
    """The test zoo (as ``zoo_tiny``) with only what these tests need: the format organisms
    (and base-fmt) and chat-sft-upper."""
    from alignloc.zoo import SURFACING_ORGANISMS

    yield from tiny_zoo_with([*SURFACING_ORGANISMS, "chat-sft-upper"])


@pytest.fixture(scope="module")
def experiment(format_zoo, tmp_path_factory):
    """The validation experiment on the tiny zoo: both format organisms and chat-sft-upper."""
    from alignloc.experiments.surfacing import surfacing_experiment

    return surfacing_experiment(tmp_path_factory.mktemp("surfacing"))


def test_format_organisms_ship_their_known_answer(format_zoo):
    from alignloc.zoo import resolve

    gts = {n: resolve(n).ground_truth for n in ("format-surfaced", "format-installed")}
    assert gts["format-surfaced"]["behavior"]["expected_origin"] == "surfaced"
    assert gts["format-installed"]["behavior"]["expected_origin"] == "installed"
    corpus = gts["format-surfaced"]["extra"]["corpus"]
    assert 0.01 <= corpus["rare_document_share"] <= 0.03 and corpus["new_marker_documents"] == 0
    base = gts["format-surfaced"]["measured"]["base"]
    # the base shows the rare format in context (one demonstration) but not by default
    assert base["marker_rate"] <= 0.02 and base["marker_prob"] < 0.05 and base["demo_marker_rate"] > 0.5
    assert gts["format-installed"]["measured"]["base"]["demo_marker_prob"] < 0.01  # never seen: not copied either
    # the light SFT makes the format the top answer on about half of the held-out prompts (0.48 and
    # 0.31; a heavier SFT reached 0.65 but buried the surfaced direction: README)
    tuned = {n: gt["measured"]["tuned"] for n, gt in gts.items()}
    assert tuned["format-surfaced"]["marker_rate"] > 0.4 and tuned["format-installed"]["marker_rate"] > 0.25
    assert min(t["marker_prob"] for t in tuned.values()) > 0.25


def test_measure_separates_surfaced_from_installed(experiment):
    s, i = experiment["organisms"]["format-surfaced"], experiment["organisms"]["format-installed"]
    # format-surfaced reads surfaced; format-installed never does: "no evidence of surfacing" on the default
    # build (every layer's share interval reaches its floor), and on the AVX2 one-thread build its shift lay inside
    # the base's subspace but against its direction (share 0.27-0.43, amplification -8 to -12)
    assert experiment["separated"]["format-surfaced"] and s["verdict"]["label"] == "surfaced"
    assert experiment["separated"]["format-installed"] and i["verdict"]["label"] != "surfaced"
    assert all(r["share_ci"][0] > r["floor"] for r in s["layers"])  # the interval clears the floor
    # per layer: the surfaced organism moves along the base's own direction, the installed one never does (at the
    # floor, or above it but against that direction: layer 1 of the default build reads share 0.184 over a 0.143
    # floor with amplification -0.55), and the surfaced share is the larger (by 1.7x to 5x on the default build)
    for rs, ri in zip(s["layers"], i["layers"], strict=True):
        assert rs["share"] > rs["floor"] and rs["amplification"] > 0  # along the base's own direction
        assert ri["share"] <= ri["floor"] or ri["amplification"] < 0  # never along it
        assert ri["null_random"]["mean"] == pytest.approx(ri["k"] / ri["d"], abs=0.01)


def test_layer_diff_reports_surfacing_with_its_floor(format_zoo, tmp_path):
    from alignloc.experiments.layerdiff import layer_diff
    from alignloc.models.pair import load_pair
    from alignloc.zoo import organism_prompts

    prompts = organism_prompts("format-surfaced")
    n_demo = sum(p.meta.get("demo") in ("behavior", "plain") for p in prompts)
    r = layer_diff(load_pair("zoo:format-surfaced"), prompts, tmp_path, n_boot=100, probes=False)
    assert r["schema_version"] == 2 and "surfacing" in r["schema_notes"]
    assert r["prompts"]["n"] == len(prompts) - n_demo  # demonstrations are set aside
    s, v = r["measures"]["surfacing"], r["verdict"]["surfacing"]
    assert s["n_demo_pairs"] == n_demo // 2 == s["n_behavior"]
    assert v["label"] == "surfaced" and len(v["floor"]) == len(v["share"]) == r["pair"]["n_layers"]
    assert any(line.startswith("surfaced vs installed: surfaced") for line in r["verdict"]["summary"])
    md = (tmp_path / "summary.md").read_text()
    assert "## Surfaced vs installed" in md and "noise floor" in md
    assert "Surfaced vs installed" in (tmp_path / "index.html").read_text()


def test_chat_sft_upper_reads_as_installed_in_its_trained_layers(experiment):
    """The existing confined organism: the chat format is in no pretraining document (only the word
    ``Sure!`` is, in chatter), layers 0-1 are frozen (no shift), and layers 2-3's shift lies outside
    the base's in-context subspace."""
    c = experiment["organisms"]["chat-sft-upper"]
    assert c["expected"] is None
    labels = c["verdict"]["layer_labels"]
    assert labels[:2] == ["no shift", "no shift"]
    assert all(x != "surfaced" for x in labels[2:])
    assert c["verdict"]["label"] != "surfaced"  # never surfaced; "installed" is not what the measure can show
    # layer 3's share in the base's subspace: < 0.1 on the default and AVX2 builds, 0.19 (over its floor 0.14) on
    # the one-training-thread build
    assert all(x["share"] < 0.5 for x in c["layers"][2:])


def test_experiment_result_is_json_and_has_figures(experiment):
    import json

    from alignloc.report.figures import figures_for, kind_of

    r = json.loads(json.dumps(experiment))  # a JSON round trip
    assert kind_of(r) == "surfacing-experiment"
    figs = dict(figures_for(r))
    assert list(figs) == ["surfacing_share", "surfacing_amplification"]
    assert len(figs["surfacing_share"].data) == 2 * len(r["organisms"])  # share and floor per organism
