"""Cross-model activation patching: batched sweep == one forward per cell, and it finds the planted layer."""

from __future__ import annotations

import pytest
import torch

from alignloc.analyses.outputs import full_target_logprobs, teacher_forced_batch
from alignloc.causal.attribution import attribution_sweep, attribution_sweeps
from alignloc.causal.patching import patch_sweep, within_sweep
from alignloc.causal.triage import confirm, spaced_layers, spearman, triaged_layers
from alignloc.models.hooks import count_hooks, edit, run_recording
from alignloc.models.pair import load_pair
from alignloc.sites import Site
from alignloc.zoo import organism_prompts


def one_cell(pair, prompts, kind, layer, positions):
    """Reference: patch one site with its own forward (no batching across cells).

    ``positions``: ``"all"``, ``"last"`` or an offset from the last context token.
    """
    ids, mask, ctx, tgt = teacher_forced_batch(pair.tokenizer, prompts, True, None)
    site = Site(layer, kind)
    donor = run_recording(pair.tuned.model, pair.tuned.family, [site], ids, mask, stop=False)[site]
    offset = 0 if positions == "last" else positions
    where = torch.tensor([n - 1 for n in ctx]) + (0 if positions == "all" else offset)

    def fn(act):
        if positions == "all":
            return donor.clone()
        act = act.clone()
        act[torch.arange(len(ctx)), where] = donor[torch.arange(len(ctx)), where]
        return act

    with torch.no_grad(), edit(pair.base.model, pair.base.family, site, fn):
        logits = pair.base.model(input_ids=ids, attention_mask=mask).logits
    return float(full_target_logprobs(logits, ctx, tgt).mean())


@pytest.mark.parametrize("positions", ["all", "last"])
def test_batched_sweep_equals_one_forward_per_cell(zoo_tiny, positions):
    pair = load_pair("zoo:chat-sft-upper")
    prompts = [p for p in organism_prompts("chat-sft-upper") if p.kind == "behavior"][:12]
    for kind in ("resid_post", "mlp_out"):
        r = patch_sweep(pair, prompts, kind=kind, positions=positions, batch_size=12)
        ref = [one_cell(pair, prompts, kind, layer, positions) for layer in range(pair.n_layers)]
        assert r["patched"] == pytest.approx(ref, abs=1e-5)
    assert count_hooks(pair.base.model) == 0


def test_layer_by_position_grid_equals_one_forward_per_cell(zoo_tiny):
    pair = load_pair("zoo:chat-sft-upper")
    prompts = [p for p in organism_prompts("chat-sft-upper") if p.kind == "behavior"][:8]
    grid = patch_sweep(pair, prompts, kind="resid_pre", positions="each", window=5, max_rows=24)
    assert grid["offsets"] == [-4, -3, -2, -1, 0] and len(grid["tokens"]) == 5
    last = patch_sweep(pair, prompts, kind="resid_pre", positions="last")
    assert [row[-1] for row in grid["patched"]] == pytest.approx(last["patched"], abs=1e-5)
    for layer in (1, 3):
        ref = [one_cell(pair, prompts, "resid_pre", layer, o) for o in grid["offsets"]]
        assert grid["patched"][layer] == pytest.approx(ref, abs=1e-5)
    # the prompts share their last tokens (" Assistant", ":"), named in the grid's labels
    assert grid["tokens"][-1] == ":"


@pytest.mark.parametrize("name", ["refusal-lora-L1", "refusal-lora-L2"])
def test_patching_block_writes_finds_the_planted_layer(zoo_tiny, name):
    pair = load_pair(f"zoo:{name}")
    k = pair.ground_truth["layers"][0]
    prompts = [p for p in organism_prompts(name) if p.kind == "behavior"][:48]
    post = patch_sweep(pair, prompts, kind="resid_post")
    # the residual after the planted layer carries everything; before it, nothing
    assert all(abs(x) < 1e-4 for x in post["recovered"][:k])
    assert all(x == pytest.approx(1.0, abs=1e-3) for x in post["recovered"][k:])
    mlp = patch_sweep(pair, prompts, kind="mlp_out")
    assert max(range(pair.n_layers), key=lambda i: mlp["recovered"][i]) == k
    back = patch_sweep(pair, prompts, kind="resid_post", direction="base_into_tuned")
    assert back["gap"] == pytest.approx(-post["gap"], rel=1e-5)
    assert back["recovered"][k] == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("name", ["refusal-lora-L2", "chat-sft-lower"])
def test_attribution_ranks_layers_like_exact_patching(zoo_tiny, name):
    pair = load_pair(f"zoo:{name}")
    planted = pair.ground_truth["layers"]
    prompts = [p for p in organism_prompts(name) if p.kind == "behavior"][:24]
    exact, approx = [], []
    for kind in ("attn_out", "mlp_out", "resid_post"):
        e = patch_sweep(pair, prompts, kind=kind, positions="all")
        a = attribution_sweep(pair, prompts, kind=kind)
        assert a["gap"] == pytest.approx(e["gap"], rel=1e-4)
        assert len(a["by_position"]) == pair.n_layers
        exact += e["recovered"]
        approx += a["recovered"]
        if kind == "mlp_out":
            best = max(range(pair.n_layers), key=lambda i: a["recovered"][i])
            assert best in planted and a["recovered"][best] > 0.3
    assert spearman(exact, approx) >= 0.8
    assert count_hooks(pair.base.model) == 0
    assert all(p.grad is None for p in pair.base.model.parameters())
    # several kinds from one forward and backward: each the same as alone (a grid window per kind)
    together = attribution_sweeps(pair, prompts, {"attn_out": None, "mlp_out": None, "resid_pre": 3})
    for kind, window in (("attn_out", None), ("mlp_out", None), ("resid_pre", 3)):
        alone = attribution_sweep(pair, prompts, kind=kind, window=window)
        assert together[kind]["offsets"] == alone["offsets"] and together[kind]["kind"] == kind
        assert together[kind]["recovered"] == pytest.approx(alone["recovered"], abs=1e-6), kind
        torch.testing.assert_close(torch.tensor(together[kind]["by_position"]), torch.tensor(alone["by_position"]),
                                   atol=1e-6, rtol=0)
    assert count_hooks(pair.base.model) == 0


def test_patch_sweeps_share_one_recording_and_equal_each_sweep_alone(zoo_tiny):
    """Several sweeps of one direction (per-layer, a layer subset, a layer x position grid) from one recorded run of
    each model per batch: the donor runs once per batch, not once per sweep, and each result is the sweep's alone."""
    from alignloc.causal.patching import Job, patch_sweeps
    from alignloc.models.families import get_module

    pair = load_pair("zoo:refusal-lora-L2")
    prompts = [p for p in organism_prompts("refusal-lora-L2") if p.kind == "behavior"][:16]
    jobs = [Job("resid_post"), Job("mlp_out", [1, 2]), Job("resid_pre", [0, 2], "each", 3)]
    calls = []
    hook = get_module(pair.tuned.model, pair.tuned.family.final_norm).register_forward_hook(lambda *_: calls.append(1))
    try:
        together = patch_sweeps(pair, prompts, jobs)
    finally:
        hook.remove()
    assert len(calls) == 2  # 16 prompts in batches of 8: one donor forward per batch for the three sweeps
    for job, res in zip(jobs, together, strict=True):
        alone = patch_sweep(pair, prompts, kind=job.kind, layers=job.layers, positions=job.positions, window=job.window)
        assert res["layers"] == alone["layers"] and res["kind"] == job.kind and res.get("offsets") == alone.get("offsets")
        assert res["gap"] == pytest.approx(alone["gap"], abs=1e-6)
        torch.testing.assert_close(torch.tensor(res["recovered"]), torch.tensor(alone["recovered"]), atol=1e-5, rtol=0)
    assert count_hooks(pair.base.model) == 0


def test_triage_patches_exactly_the_layers_attribution_ranks_first(zoo_tiny):
    """Attribution ranks the layers of a base-into-tuned MLP sweep; exact patching of the top 2 gives the full sweep's
    values there (None elsewhere), with the planted layer among them and the agreement recorded."""
    pair = load_pair("zoo:refusal-lora-L2")
    prompts = [p for p in organism_prompts("refusal-lora-L2") if p.kind == "behavior"][:24]
    layers = list(range(pair.n_layers))
    full = patch_sweep(pair, prompts, kind="mlp_out", direction="base_into_tuned")
    est = attribution_sweep(pair, prompts, kind="mlp_out", direction="base_into_tuned")["recovered"]
    chosen = triaged_layers(layers, est, 2)
    assert 2 in chosen and len(chosen) == 2
    part = confirm(patch_sweep(pair, prompts, kind="mlp_out", layers=chosen, direction="base_into_tuned"), est, layers)
    assert part["layers"] == layers and part["triage"]["confirmed"] == chosen and part["triage"]["top_layer_agrees"]
    for layer in layers:
        got = part["recovered"][layer]
        assert got is None if layer not in chosen else got == pytest.approx(full["recovered"][layer], abs=1e-5)
    # the planted MLP is the only one whose base output moves the tuned model (0.45 of the gap; the others ~0)
    assert max(layers, key=lambda i: abs(full["recovered"][i])) == 2 and abs(full["recovered"][2]) > 0.3


def test_the_causal_methods_leave_out_answers_both_models_wrote():
    from alignloc.causal.report import changed_behavior
    from alignloc.prompts import Prompt

    ps = [Prompt("a", "x", "behavior", target=" yes"), Prompt("b", "x", "behavior", target=" no", meta={"same_answer": True}),
          Prompt("c", "x", "behavior"), Prompt("d", "x", "knowledge", target=" Paris")]
    assert [p.id for p in changed_behavior(ps)] == ["a"]


def test_triaged_patch_block_runs_the_cells_its_plan_counts(zoo_tiny):
    """``--budget standard``'s patch block on an 8-layer organism: the cells it patches are those ``patch_cells`` plans
    (a third of the layers of the sweeps the verdict does not read, the grid's top cells by attribution), and each
    confirmed grid cell equals the full grid's; the within-model grids are triaged by cell the same way."""
    from alignloc.causal.budget import patch_cells
    from alignloc.causal.report import PATCH_WINDOW, patch_block
    from alignloc.causal.triage import confirm_cells, triaged_cells

    name = "refusal-lora-L5-natural-large"
    pair = load_pair(f"zoo:{name}")
    prompts = [p for p in organism_prompts(name) if p.kind == "behavior" and p.target][:16]
    n = pair.n_layers
    blk = patch_block(pair, prompts, "logprob", True, PATCH_WINDOW, triage=True, verdict_reads=True)
    grid = blk["patch"]["grid"]
    offsets = grid["offsets"]
    ran = lambda rows: sum(v is not None for row in rows for v in (row if isinstance(row, list) else [row]))  # noqa: E731
    cells = sum(ran(blk["patch"][key][kind]["recovered"]) for key in ("per_layer", "kept") for kind in blk["patch"][key])
    cells += ran(grid["recovered"])
    assert n == 8 and cells == patch_cells(n, True, len(offsets), triage=True, verdict_reads=True)
    kept = blk["patch"]["kept"]["resid_post"]  # the whole residual: evenly spaced layers, the last one included
    assert kept["triage"]["confirmed"] == spaced_layers(list(range(n)), 4) == [1, 3, 5, 7]
    est = blk["attribution"]["grid"]["by_position"]
    top = triaged_cells(list(range(n)), est, offsets, confirm_cells(n, len(offsets)))
    confirmed = {(layer, o) for layer, row in zip(grid["layers"], grid["recovered"], strict=True)
                 for o, v in zip(offsets, row, strict=True) if v is not None}
    assert confirmed == set(top) and len(top) < n * len(offsets)
    full = patch_sweep(pair, prompts, kind="resid_pre", positions="each", window=PATCH_WINDOW)
    for layer, o in top:
        assert grid["recovered"][layer][offsets.index(o)] == pytest.approx(full["recovered"][layer][offsets.index(o)], abs=1e-5)
    best = max(((layer, j) for layer in range(n) for j in range(len(offsets))), key=lambda c: abs(full["recovered"][c[0]][c[1]]))
    assert (best[0], offsets[best[1]]) in confirmed  # the largest exact cell is among those attribution kept
    # the within-model grids are triaged by cell too: each side's top cells by its own estimate, equal to the full grid's
    for side in ("base", "tuned"):
        w = blk["within"][side]
        ran_w = {(layer, o) for layer, row in zip(w["layers"], w["recovered"], strict=True)
                 for o, v in zip(w["offsets"], row, strict=True) if v is not None}
        width = len(w["offsets"])
        assert ran_w == set(triaged_cells(list(range(n)), w["triage"]["estimate"], w["offsets"], confirm_cells(n, width)))
        assert len(ran_w) == confirm_cells(n, width) < n * width
    paired = [p for p in prompts if p.corrupt_text]
    full_w = within_sweep(pair, paired, side="base", kind="resid_pre", window=PATCH_WINDOW)
    w = blk["within"]["base"]
    for layer, row in zip(w["layers"], w["recovered"], strict=True):
        for j, v in enumerate(row):
            assert v is None or v == pytest.approx(full_w["recovered"][layer][j], abs=1e-5), (layer, j)
