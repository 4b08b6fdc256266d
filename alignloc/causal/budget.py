"""How much causal work `layer-diff --causal` does: three budgets, and the plan of a run with its cost.

A budget fixes what the defaults leave open: the graft window sizes, the learned mask's steps and how
many prompts of each kind the causal methods read.

- ``quick``: windows of 1 and 2 layers, no mask (the concentration profile follows single-layer
  grafting), 32 prompts per kind, and only the patching the verdict reads (each block's attention, MLP
  and residual output patched tuned into base, per layer, on the prompts it localizes);
- ``standard`` (the default): windows 1, 2, 4, ... up to half the layers, a 100-step mask, 64 prompts,
  and the whole patching block of the report (also base into tuned, a layer x position grid,
  attribution patching and within-model grids, on every prompt kind), where the sweeps the verdict
  does not read (all but the per-layer sweeps tuned into base on the behavior prompts) are triaged:
  attribution estimates every layer, exact patching confirms the third of the layers it ranks first
  (``causal.triage``; every layer of a model of up to 4);
- in both of these, a graft window of more than one layer is reverted (necessity) only where it brings
  ``graft.CONFIRM_AT`` of the gap into the base: a carrier must be both sufficient and necessary, so the
  verdict reads the same windows (the others' necessity is None); and the concentration profile grafts the
  top-k sets of up to half the layers (the verdict's ``max_share``; the mask's selection if it is larger):
  the verdict names no larger set;
- ``thorough``: every window size up to half the layers, each both ways, a 300-step mask, 128 prompts, all
  patching, every layer exact, the whole profile.

``--windows`` and ``--mask-steps`` given on their own override the budget's. ``plan`` counts each
stage's forward passes in the units its report records (``windows.passes`` and ``profile.passes``:
passes over the prompt set; ``mask.passes.forward``: forwards of one mask batch; ``patch_cells``: patched
sites, each about half a pass or less, see ``causal.patching``), so a run can be checked against its plan; ``plan_lines`` prints them with an estimate in minutes from ``probe``, a
timed forward of one batch. Windows and profile count full passes where grafts resume at their first
layer (``causal.resumed``) and cost about half of one, which leaves room for the windows a triage confirms.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from alignloc import progress
from alignloc.analyses.verdict import VerdictConfig
from alignloc.causal.graft import CONFIRM_AT, window_sizes
from alignloc.causal.localize import profile_sets
from alignloc.causal.mask import DeltaMask
from alignloc.causal.metrics import scored_batch, scored_logits
from alignloc.causal.triage import confirm_cells, confirm_count
from alignloc.models.pair import LoadedModel, ModelPair
from alignloc.prompts import Prompt

PROFILE_BATCH = 8  # prompts per forward in windows and profile (``localize``'s batch size)


@dataclass(frozen=True)
class Budget:
    """What a budget runs: ``sizes`` None = ``graft.window_sizes``'s default, ``"all"`` = every size up to half."""

    name: str
    sizes: str | None
    mask_steps: int
    n: int
    patch_extras: bool = True  # False: only the per-layer patching the verdict reads (``causal.report``)
    triage: bool = True  # the extras patch exactly only the layers attribution ranks first (``causal.triage``)

    def window_sizes(self, n_layers: int, override: list[int] | None = None) -> list[int]:
        """The window sizes this budget sweeps on ``n_layers`` layers (``override``: ``--windows``)."""
        if override is not None:
            return override
        if self.sizes == "all":
            return list(range(1, max(1, n_layers // 2) + 1))
        return window_sizes(n_layers, self.sizes)


BUDGETS = {"quick": Budget("quick", "1,2", 0, 32, patch_extras=False), "standard": Budget("standard", None, 100, 64),
           "thorough": Budget("thorough", "all", 300, 128, triage=False)}


def get(name: str) -> Budget:
    """The budget called ``name`` (ValueError naming the choices otherwise)."""
    if name not in BUDGETS:
        raise ValueError(f"budget must be one of {', '.join(BUDGETS)}, got {name!r}")
    return BUDGETS[name]


VERDICT_SITES = 3  # attn_out, mlp_out, resid_post: the per-layer patching ``causal.localize`` reads


def patch_cells(n_layers: int, extras: bool, window: int, triage: bool = False, verdict_reads: bool = True) -> int:
    """Patched cells of one prompt set: the per-layer sites (tuned into base), and with ``extras`` the same
    base into tuned and the layer x position grid over ``window`` positions. With ``triage``, every sweep is
    patched on ``triage.confirm_count`` layers only (the grid on ``confirm_cells``), except the tuned-into-base
    sweeps of the prompts the verdict reads (``verdict_reads``)."""
    k = confirm_count(n_layers) if triage else n_layers
    per_layer = VERDICT_SITES * (n_layers if verdict_reads or not triage else k)
    grid = confirm_cells(n_layers, window) if triage else window * n_layers
    return per_layer + (VERDICT_SITES * k + grid if extras else 0)


def plan(n_layers: int, sizes: list[int], mask_steps: int, n_prompts: int, mask: DeltaMask | None = None,
         triage: bool = False, verdict: VerdictConfig | None = None) -> dict:
    """Each stage's forward passes for localizing the gap of ``n_prompts`` prompts on ``n_layers`` layers.

    ``windows`` and ``profile`` count passes over the prompt set (the profile reads both of its metrics off
    the same passes); ``mask`` counts forwards of one mask batch. With ``triage`` (``graft.window_sweep``'s
    ``necessity_at``), ``windows`` counts every window's sufficiency and each single layer's necessity; the run adds
    one pass per window of more than one layer that it confirms (``windows.confirmed``, at most ``windows_confirm``);
    ``profile`` counts the sets of up to ``profile_k`` layers (``localize.profile_sets`` of ``verdict``'s bars), and the
    run adds two passes per layer the mask selects beyond that."""
    m = DeltaMask(steps=mask_steps) if mask is None else mask
    n_sets = profile_sets(n_layers, verdict or VerdictConfig()) if triage else n_layers
    batches = math.ceil(n_prompts / m.batch_size)
    windows = sum(n_layers - w + 1 for w in sizes)
    wider = sum(n_layers - w + 1 for w in sizes if w > 1)
    return {"n_prompts": n_prompts, "n_layers": n_layers, "sizes": sizes,
            "windows": 2 + 2 * windows - (wider if triage else 0), "windows_confirm": wider if triage else 0,
            "mask": 0 if mask_steps == 0 else 2 * batches + mask_steps * m.samples,
            "profile": 2 + 2 * n_sets, "profile_k": n_sets}


@torch.no_grad()
def probe(lm: LoadedModel, prompts: list[Prompt], bos: bool) -> float:
    """Seconds for one forward of a batch of ``PROFILE_BATCH`` prompts (the second of two: the first warms up)."""
    batch = scored_batch(lm.tokenizer, [p for p in prompts if p.target][:PROFILE_BATCH], bos, lm.max_len)
    scored_logits(lm, batch, grouped=True)
    t0 = time.perf_counter()
    scored_logits(lm, batch, grouped=True)
    return time.perf_counter() - t0


def plan_lines(budget: Budget, plans: dict[str, dict], seconds_per_batch: float) -> list[str]:
    """The plan as printed before the run: per kind and stage, the passes and an estimate in minutes."""
    lines = [f"causal budget '{budget.name}': {seconds_per_batch:.2f} s per forward of {PROFILE_BATCH} prompts (timed)"]
    total = 0.0

    def per_set(n_prompts: int) -> float:
        return math.ceil(n_prompts / PROFILE_BATCH) * seconds_per_batch

    for kind, p in plans.items():
        if kind == "patching":
            continue
        mask_batch = DeltaMask().batch_size / PROFILE_BATCH * seconds_per_batch
        est = p["windows"] * per_set(p["n_prompts"]) + p["mask"] * mask_batch + p["profile"] * per_set(p["n_prompts"])
        total += est
        sets = (f" (sets of up to {p['profile_k']} layers{', or the mask selection' if p['mask'] else ''})"
                if p.get("profile_k", p["n_layers"]) < p["n_layers"] else "")
        confirm = (f" + 1 per wider window that brings {CONFIRM_AT:.0%} of the gap (at most {p['windows_confirm']})"
                   if p.get("windows_confirm") else "")
        lines.append(f"  {kind.replace('_', ' ')} ({p['n_prompts']} prompts, {p['n_layers']} layers): graft windows "
                     f"{p['sizes']} {p['windows']} passes{confirm}; mask {p['mask']} batch forwards; profile {p['profile']} "
                     f"passes{sets}; about {est / 60:.1f} min")
    for part in plans.get("patching", []):  # a patched cell resumes its run where the patch enters: half a pass at most
        est = part["cells"] / 2 * per_set(part["n_prompts"])
        total += est
        lines.append(f"  patching, {part['prompts']} ({part['n_prompts']} prompts): {part['cells']} cells; at most "
                     f"{est / 60:.1f} min")
    lines.append(f"  estimate: about {total / 60:.1f} min in all")
    return lines


def announce(pair: ModelPair, prompts: list[Prompt], moved: list[Prompt], budget: Budget, sizes: list[int],
             mask_steps: int, bos: bool, versus_control: bool = False, verdict: VerdictConfig | None = None) -> dict:
    """The plan of ``causal_report`` on ``prompts`` (knowledge localized on the ``moved`` facts; with
    ``versus_control`` the behavior gap again against the control, without patching), printed with its
    estimate before the run (``progress.note``); returns ``{"budget", kind: plan, "patching": [...]}`` for the report."""
    from alignloc.causal.report import PATCH_WINDOW, changed_behavior, patched_prompts

    behavior, knowledge = changed_behavior(prompts)[: budget.n], moved[: budget.n]
    plans: dict = {kind: plan(pair.n_layers, sizes, mask_steps, len(ps), triage=budget.triage, verdict=verdict) for kind, ps in
                   (("behavior", behavior), ("knowledge", knowledge)) if ps}
    if behavior and versus_control:
        plans["behavior_vs_control"] = plan(pair.n_layers, sizes, mask_steps, len(behavior), triage=budget.triage,
                                            verdict=verdict)
    plans["patching"] = [{"prompts": name, "n_prompts": len(ps),
                          "cells": patch_cells(pair.n_layers, extras, PATCH_WINDOW, extras and budget.triage,
                                               verdict_reads=name == "behavior" or not extras)}
                         for name, ps, extras in patched_prompts(prompts, budget.n, budget.patch_extras, moved)]
    if behavior or knowledge:
        for line in plan_lines(budget, plans, probe(pair.tuned, behavior or knowledge, bos)):
            progress.note(line)
    return {"budget": budget.name, **plans}
