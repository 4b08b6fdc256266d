"""Functional localization of one prompt set's gap: windows, a learned delta mask, component patching.

The evidence the verdict (``alignloc.analyses.verdict``) weighs when it names behavior or
knowledge layers, computed on the pair itself rather than read off its weight norms:

- ``windows``: grafting of every contiguous window of each size (``causal.graft.window_sweep``),
  and the ``carrier``: the smallest window that is both sufficient and necessary;
- ``mask``: a learned per-layer gate over the delta (``causal.mask.DeltaMask``), its ranking and
  how much of the gap its rounded selection carries;
- ``profile``: the concentration profile (``causal.profile``): the top-k layers of that ranking
  grafted both ways for every k, with bootstrap intervals over prompts;
- ``patching``: cross-model patching (tuned into base, all positions) of each block's attention and
  MLP output, and the per-layer increment of ``resid_post`` patching.

The metric is the mean teacher-forced log-prob of the prompts' targets (for knowledge, the
caller passes the facts that moved, in one direction, so gains and losses do not cancel).
"""

from __future__ import annotations

import time

from alignloc.analyses.concentration import at_k
from alignloc.analyses.outputs import answer_tokens
from alignloc.analyses.verdict import VerdictConfig
from alignloc.causal.graft import CONFIRM_AT, carrier_window, window_sweep
from alignloc.causal.mask import DeltaMask
from alignloc.causal.patching import Job, patch_sweeps
from alignloc.causal.profile import concentration_profile, ranking_from_windows
from alignloc.causal.resumed import ResumedScorer
from alignloc.models.pair import ModelPair
from alignloc.prompts import Prompt

PATCH_SITES = ("resid_post", "attn_out", "mlp_out")


def moved_prompts(prompts: list[Prompt], lp_base, lp_tuned, nats: float = 2.0) -> list[Prompt]:
    """The prompts whose target log-prob moved by more than ``nats`` between base and tuned, in the
    dominant direction (facts lost, or facts gained such as an edit), so their gap does not cancel."""
    delta = [(p, float(t) - float(b)) for p, b, t in zip(prompts, lp_base, lp_tuned, strict=True) if p.target]
    moved = [(p, d) for p, d in delta if d == d and abs(d) > nats]
    if not moved:
        return []
    sign = 1.0 if sum(d for _, d in moved) >= 0 else -1.0
    return [p for p, d in moved if d * sign > 0]


def profile_sets(n_layers: int, verdict: VerdictConfig, selected: int = 0) -> int:
    """The largest top-k set the verdict reads off a concentration profile: ``max_share`` of the layers (a larger set
    localizes nothing, as a window of more than half the layers), or ``selected``, the mask's selection, if larger
    (its recovery is read off the profile's set of that size)."""
    return max(int(verdict.max_share * n_layers), selected, 1)


def patch_summary(per_layer: dict[str, dict]) -> dict:
    """Per-layer recovered fractions of the component sites and the resid_post increments."""
    out = {k: per_layer[k]["recovered"] for k in ("attn_out", "mlp_out") if k in per_layer}
    if "resid_post" in per_layer:
        rec = per_layer["resid_post"]["recovered"]
        out["resid_increment"] = [rec[0]] + [b - a for a, b in zip(rec, rec[1:])]
    out["gap"] = next(iter(per_layer.values()))["gap"]
    return out


def localize(pair: ModelPair, prompts: list[Prompt], bos: bool, *, sizes: list[int] | None = None,
             verdict: VerdictConfig | None = None, mask: DeltaMask | None = None,
             knowledge: list[Prompt] | None = None, patching: dict[str, dict] | None = None,
             batch_size: int = 8, n_boot: int = 1000, seed: int = 0, sites: tuple[str, ...] = PATCH_SITES,
             triage: bool = False) -> dict:
    """Windows, mask, concentration profile and patching for the gap of ``prompts`` (those with a target); JSON-ready.

    ``mask=None`` uses ``DeltaMask()`` defaults; pass ``DeltaMask(steps=0)`` to skip fitting. The profile
    (``causal.profile``) follows the mask's ranking, or single-layer grafting's without a mask; the mask's
    selection is read off it (``mask.recovery.selected``: the profile's set of that size, on the log-prob).
    ``patching`` may hold per-site ``patch_sweep`` results already computed on the same prompts; ``sites=()``
    skips patching. ``verdict``: the bars the verdict reads this evidence with (``VerdictConfig``: ``carrier_at``,
    the share of the gap a carrier carries both ways; ``max_share``, the most layers it may hold). ``triage``
    (``--budget standard`` and ``quick``) runs only what those bars read: a window of more than one layer is reverted
    only where its sufficiency reaches ``graft.CONFIRM_AT`` of the gap, or ``carrier_at`` if lower (a carrier must be
    both), and the profile stops at ``profile_sets`` layers (``max_share`` of them, or the mask's selection if larger).
    """
    from alignloc.causal.graft import target_metric

    chosen = [p for p in prompts if p.target]
    if not chosen:
        raise ValueError("localization needs prompts with a 'target'")
    verdict = verdict or VerdictConfig()
    carrier_at = verdict.carrier_at
    metric = target_metric(chosen, None, bos)
    t0 = time.time()
    resumed = (ResumedScorer(pair.base, chosen, bos, batch_size), ResumedScorer(pair.tuned, chosen, bos, batch_size))
    win = window_sweep(pair, metric, sizes, resumed=resumed, necessity_at=min(CONFIRM_AT, carrier_at) if triage else None)  # the scorers serve the profile below too
    out = {"n": len(chosen), "gap": win["gap"], "answer_tokens": float(answer_tokens(pair.tokenizer, chosen).mean()),
           "windows": win, "carrier": carrier_window(win, carrier_at),
           "carrier_at": carrier_at, "seconds": {"windows": round(time.time() - t0, 2)}}
    mask = DeltaMask() if mask is None else mask
    if mask.steps > 0:
        t0 = time.time()
        mask.fit(pair, chosen, bos, knowledge=knowledge)
        out["mask"] = mask.to_json()
        out["seconds"]["mask"] = round(time.time() - t0, 2)
    t0 = time.time()
    fitted = mask.steps > 0
    ranking = mask.ranking_ if fitted else ranking_from_windows(win)
    cap = profile_sets(pair.n_layers, verdict, len(mask.selected_) if fitted else 0) if triage else None
    prof = concentration_profile(pair, chosen, bos, ranking, ranking_source="mask" if fitted else "single-layer grafting",
                                 n_boot=n_boot, seed=seed, batch_size=batch_size, resumed=resumed, max_k=cap)
    del resumed
    out["profile"] = prof
    out["seconds"]["profile"] = round(time.time() - t0, 2)
    if fitted:
        lp = prof.get("logprob_profile", prof)
        k = len(mask.selected_)
        sel = at_k(lp, k) if k else {"sufficiency": 0.0, "necessity": 0.0}
        out["mask"]["recovery"] = {"gap": lp["gap"], "selected": {"layers": mask.selected_, "sufficiency": sel["sufficiency"],
                                                                "necessity": sel["necessity"]}}
    if not sites:
        return out
    t0 = time.time()
    if patching is None:
        patching = dict(zip(sites, patch_sweeps(pair, chosen, [Job(k) for k in sites], bos=bos, batch_size=batch_size),
                            strict=True))  # one recorded run of each model per batch for every site
    out["patching"] = patch_summary(patching)
    out["seconds"]["patching"] = round(time.time() - t0, 2)
    return out
