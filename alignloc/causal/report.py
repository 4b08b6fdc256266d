"""The causal block of a layer-diff report (``--causal``): localization, patching and attribution.

- ``localize[behavior]``: on the behavior prompts (at most ``n``), graft windows of each size,
  the learned delta mask, the concentration profile and per-layer patching (``alignloc.causal.localize``): the evidence the
  verdict names behavior layers from; ``localize[knowledge]``: the same on the knowledge prompts
  whose fact moved by more than 2 nats (``moved``), if any did.

For each prompt kind with targets (behavior, knowledge, context; at most ``n`` prompts each):

- ``patch[kind]``: cross-model patching per layer for ``resid_post``, ``attn_out``, ``mlp_out`` in
  both directions (tuned into base: recovered; base into tuned: kept), and a layer x position
  grid of ``resid_pre`` (tuned into base) over the last ``window`` context tokens;
- ``attribution[kind]``: the same grid and per-layer estimates from attribution patching, with
  the Spearman rank correlation of the per-layer estimates to the exact ones and the Pearson
  correlation of the grids (most grid cells are ~0, so their ranks are noise);
- ``within[kind]``: within-model patching (clean into ``corrupt_text``) grids in the base *and* the
  tuned model on the prompts that have a ``corrupt_text``, or the reason it was skipped (none
  has one, unequal token lengths) and ``n_paired``, how many had one.

Metrics per kind: ``logprob`` of the target for behavior and knowledge, ``auto`` (logit
difference to the ``foil``) for context prompts and for within-model runs.
"""

from __future__ import annotations

import math

import torch

from alignloc.analyses.outputs import answer_tokens
from alignloc.analyses.verdict import VerdictConfig
from alignloc.analyses.verdict_text import gap_text
from alignloc.causal.attribution import attribution_sweeps, within_attribution_sweep
from alignloc.causal.localize import localize
from alignloc.causal.mask import DeltaMask
from alignloc.causal.patching import Job, patch_sweeps, within_sweep
from alignloc.causal.triage import (
    confirm,
    confirm_cells,
    confirm_count,
    spaced_layers,
    spearman,
    triaged_cells,
    triaged_layers,
)
from alignloc.models.pair import LoadedModel, ModelPair
from alignloc.prompts import Prompt

KINDS = ("behavior", "knowledge", "context")
PER_LAYER = ("resid_post", "attn_out", "mlp_out")
PATCH_WINDOW = 12  # context positions of the layer x position grids


def patch_block(pair: ModelPair, prompts: list[Prompt], metric: str, bos: bool, window: int, triage: bool = False,
                verdict_reads: bool = True) -> dict:
    """Cross-model patching, attribution and within-model grids for one prompt kind. With ``triage`` the sweeps
    the verdict does not read (every per-layer sweep base into tuned, the grids, and where not ``verdict_reads`` the
    per-layer sweeps tuned into base too) patch exactly only the layers attribution ranks first (the grid: its top
    cells; the whole residual, which the estimate does not rank: evenly spaced layers; ``causal.triage``), each
    reported with its estimate and their agreement; for the prompts the verdict reads, the per-layer tuned-into-base
    sweeps stay exact."""
    n_layers = pair.n_layers
    k = confirm_count(n_layers) if triage else n_layers
    layers = list(range(n_layers))

    def top_cells(est: dict) -> list[tuple[int, int]]:
        """A grid's cells to patch exactly: its top cells by the estimate (``est``: an attribution grid)."""
        return triaged_cells(layers, est["by_position"], est["offsets"], confirm_cells(n_layers, len(est["offsets"])))

    patch = {"per_layer": {}, "kept": {}}
    # every estimate of one direction from one forward and backward per batch
    into_base = attribution_sweeps(pair, prompts, {**dict.fromkeys(PER_LAYER), "resid_pre": window}, metric=metric, bos=bos)
    attr = {"per_layer": {kind: into_base[kind] for kind in PER_LAYER}, "grid": into_base["resid_pre"]}
    kept_triaged = list(PER_LAYER) if k < n_layers else []
    kept_est = attribution_sweeps(pair, prompts, dict.fromkeys(kept_triaged), direction="base_into_tuned", metric=metric,
                                  bos=bos) if kept_triaged else {}
    # per direction, the estimate each sweep is triaged by (None: every layer exact) and one call for all its sweeps
    estimates = {(key, kind): None if k >= n_layers or (key == "per_layer" and verdict_reads)
                 else (attr["per_layer"][kind] if key == "per_layer" else kept_est[kind])["recovered"]
                 for key in ("per_layer", "kept") for kind in PER_LAYER}
    grid_est = attr["grid"]["by_position"]
    estimates["grid", "resid_pre"] = None if k >= n_layers else grid_est
    cells = None if k >= n_layers else top_cells(attr["grid"])

    def job(key: str, kind: str) -> Job:
        if key == "grid":  # the grid's top cells by the estimate
            return Job(kind, None if cells is None else sorted({layer for layer, _ in cells}), "each", window, cells)
        if estimates[key, kind] is None:
            return Job(kind)
        # the whole residual: evenly spaced layers (the estimate does not rank it); the components: attribution's top
        return Job(kind, spaced_layers(layers, k) if kind == "resid_post" else triaged_layers(layers, estimates[key, kind], k))

    for direction, keys in (("tuned_into_base", ("per_layer", "grid")), ("base_into_tuned", ("kept",))):
        todo = [(key, kind) for key, kind in estimates if key in keys]
        jobs = [job(key, kind) for key, kind in todo]
        for (key, kind), res in zip(todo, patch_sweeps(pair, prompts, jobs, direction, metric, bos), strict=True):
            est = estimates[key, kind]
            done = res if est is None else confirm(res, est, layers)
            if key == "grid":
                patch["grid"] = done
            else:
                patch[key][kind] = done
    both = [(e, a) for site in PER_LAYER for e, a in zip(patch["per_layer"][site]["recovered"],
                                                           attr["per_layer"][site]["recovered"], strict=True) if e is not None]
    attr["spearman_vs_exact"] = spearman([e for e, _ in both], [a for _, a in both])  # the per-layer cells of all three sites
    cells = [(e, a) for row_e, row_a in zip(patch["grid"]["recovered"], attr["grid"]["by_position"], strict=True)
             for e, a in zip(row_e, row_a, strict=True) if e is not None and a is not None]  # the confirmed cells
    g_exact, g_approx = [e for e, _ in cells], [a for _, a in cells]
    attr["pearson_grid_vs_exact"] = (float(torch.corrcoef(torch.tensor([g_exact, g_approx]))[0, 1])
                                     if len(set(g_exact)) > 1 and len(set(g_approx)) > 1 else math.nan)
    gap, cfg = patch["grid"]["gap"], VerdictConfig()  # the verdict's minimum gap, in nats per answer
    tokens = float(answer_tokens(pair.tokenizer, prompts).mean()) if patch["grid"]["metric"] == "logprob" else 1.0
    if cfg.too_small(gap, tokens):
        attr["note"] = (f"gap {gap_text(gap, tokens)} is below {cfg.min_gap} per answer: fractions of it, and their "
                        "correlations, are noise")
    within: dict = {}
    paired = [p for p in prompts if p.corrupt_text]
    try:
        if not paired:
            raise ValueError("none of these prompts has a 'corrupt_text'")
        for side in ("base", "tuned"):
            est = (within_attribution_sweep(pair, paired, side=side, kind="resid_pre", bos=bos, window=window)
                   if side == "base" or k < n_layers else None)
            if side == "base":
                within["attribution_base"] = est
            top = None if k >= n_layers else top_cells(est)  # triaged by cell, as the cross-model grid
            exact = within_sweep(pair, paired, side=side, kind="resid_pre", bos=bos, window=window,
                                 layers=None if top is None else sorted({layer for layer, _ in top}), cells=top)
            within[side] = exact if top is None else confirm(exact, est["by_position"], layers)
    except ValueError as e:  # no corrupt_text, or corrupted prompts of another length
        within = {"skipped": str(e), "n_paired": len(paired)}  # n_paired > 0: asked for (a corrupt_text given)
    return {"metric": patch["grid"]["metric"], "n": patch["grid"]["n"], "patch": patch, "attribution": attr,
            "within": within}


def changed_behavior(prompts: list[Prompt]) -> list[Prompt]:
    """The behavior prompts with a target, less those where the tuned model's own answer is the target and
    the base model wrote the same one (``meta.same_answer``): on a broad suite most answers may be unchanged
    by a narrow edit, and a gap averaged over them would hide where the change lives."""
    return [p for p in prompts if p.kind == "behavior" and p.target and not p.meta.get("same_answer")]


def _kind_prompts(prompts: list[Prompt], kind: str, n: int) -> list[Prompt]:
    """The first ``n`` prompts of ``kind`` that the causal methods read (behavior: ``changed_behavior``)."""
    return (changed_behavior(prompts) if kind == "behavior" else [p for p in prompts if p.kind == kind and p.target])[:n]


def patched_prompts(prompts: list[Prompt], n: int, extras: bool, moved: list[Prompt] | None) -> list[tuple[str, list[Prompt], bool]]:
    """What ``causal_report`` patches: ``(name, prompts, extras)`` per prompt set. With ``extras`` the whole
    block of each kind (``patch[kind]``); the knowledge localization patches its moved facts on its own."""
    sets = [(kind, _kind_prompts(prompts, kind, n), True) for kind in KINDS] if extras else \
        [("behavior", _kind_prompts(prompts, "behavior", n), False)]
    sets.append(("knowledge, facts that moved", (moved or [])[:n], False))
    return [s for s in sets if s[1]]


def causal_report(pair: ModelPair, prompts: list[Prompt], bos: bool, n: int = 64, window: int = PATCH_WINDOW,
                  moved: list[Prompt] | None = None, sizes: list[int] | None = None, mask_steps: int = 100,
                  n_boot: int = 1000, seed: int = 0, patch_extras: bool = True, triage: bool = True,
                  verdict: VerdictConfig | None = None) -> dict:
    """Everything ``layer-diff --causal`` adds to ``report["causal"]``.

    ``moved``: knowledge prompts whose fact moved (``localize.moved_prompts``); ``sizes``: graft
    window sizes (default ``graft.window_sizes``); ``mask_steps=0`` skips the learned mask; ``n_boot``
    resamples give the concentration profile's intervals. ``patch_extras=False`` leaves ``patch`` empty:
    only the per-layer patching the verdict reads runs (inside ``localize``), as ``--budget quick`` does.
    ``triage``: the sweeps of ``patch`` that the verdict does not read patch exactly only the layers attribution
    ranks first (``causal.triage``), and the localization runs only what the verdict's bars read (``localize``: a
    graft window of more than one layer reverted only where it brings ``graft.CONFIRM_AT`` of the gap, or the carrier
    bar if lower; the concentration profile up to ``localize.profile_sets`` layers; ``--budget standard``); False runs
    every layer, window and set (``thorough``). ``verdict``: the verdict's bars (``VerdictConfig``).
    """
    out: dict = {"patch": {}, "localize": {},
                 "settings": {"n": n, "window": window, "sizes": sizes, "mask_steps": mask_steps,
                              "patch_extras": patch_extras, "triage": triage}}
    for kind in KINDS if patch_extras else ():
        chosen = _kind_prompts(prompts, kind, n)
        if chosen:
            out["patch"][kind] = patch_block(pair, chosen, "auto" if kind == "context" else "logprob", bos, window, triage,
                                             verdict_reads=kind == "behavior")
    behavior = changed_behavior(prompts)[:n]
    knowledge = [p for p in prompts if p.kind == "knowledge" and p.target][:n]
    if behavior:
        done = out["patch"]["behavior"]["patch"]["per_layer"] if "behavior" in out["patch"] else None
        out["localize"]["behavior"] = localize(pair, behavior, bos, sizes=sizes, patching=done,
                                               mask=DeltaMask(steps=mask_steps), knowledge=knowledge,
                                               n_boot=n_boot, seed=seed, triage=triage, verdict=verdict)
    if moved:
        out["localize"]["knowledge"] = localize(pair, moved[:n], bos, sizes=sizes, mask=DeltaMask(steps=mask_steps),
                                                n_boot=n_boot, seed=seed, triage=triage, verdict=verdict)
    elif knowledge:
        out["localize"]["knowledge_note"] = "no knowledge prompt's fact moved by more than 2 nats: nothing to localize"
    return out


def versus_control(pair: ModelPair, control: LoadedModel, prompts: list[Prompt], bos: bool, n: int = 64,
                   sizes: list[int] | None = None, mask_steps: int = 100, n_boot: int = 1000, seed: int = 0,
                   triage: bool = True, verdict: VerdictConfig | None = None) -> dict:
    """Localization of the part of the behavior gap that the control does not share: the same windows, mask and
    profile (no patching) on the pair (control, tuned), i.e. tuned against control rather than against the base.
    Where the control is the tuned model's training without the edit (a drift, continued pretraining), this gap is
    the edit's own."""
    behavior = changed_behavior(prompts)[:n]
    if not behavior:
        return {}
    vs = ModelPair(base=control, tuned=pair.tuned, name=f"{control.ref} -> {pair.tuned.ref}")
    return {"behavior": localize(vs, behavior, bos, sizes=sizes, mask=DeltaMask(steps=mask_steps), n_boot=n_boot,
                                 seed=seed, sites=(), triage=triage, verdict=verdict)}
