"""The localization methods under one signature, and how a method's layer ranking is scored against
the layers where an edit was planted (``alignloc.experiments.localize_bench`` runs them on the zoo).

Each method scores every layer on a target metric (teacher-forced log-prob of the prompts' targets)
and may name layers; ``rank_layers`` orders them, ``hits`` scores a ranking (``hit@1``, ``hit@k``,
ties counted as the share of planted layers in the tied group), ``flagged`` says which layers a
method flags on a null pair, ``chance`` gives the random-ranking and constant-answer rows and
``mean_ci`` a percentile bootstrap interval over organisms.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from alignloc.analyses.verdict import MIN_FLOOR, VerdictConfig
from alignloc.causal.attribution import attribution_sweep
from alignloc.causal.graft import carrier_window, graft_sweep, target_metric, window_sweep
from alignloc.causal.mask import DeltaMask
from alignloc.models.pair import ModelPair
from alignloc.prompts import Prompt

# -> (score per layer, gap, the layers the method names: None for a pure ranking)
MethodFn = Callable[[ModelPair, list[Prompt], bool], tuple[list[float], float, list[int] | None]]


def _graft(which: str) -> MethodFn:
    def run(pair: ModelPair, prompts: list[Prompt], bos: bool) -> tuple[list[float], float, list[int] | None]:
        r = graft_sweep(pair, target_metric(prompts, None, bos))
        return r[which], r["gap"], None

    return run


def _patch(kind: str, increment: bool = False) -> MethodFn:
    def run(pair: ModelPair, prompts: list[Prompt], bos: bool) -> tuple[list[float], float, list[int] | None]:
        from alignloc.causal.patching import patch_sweep

        r = patch_sweep(pair, prompts, kind=kind, positions="all", bos=bos)
        rec = r["recovered"]
        return ([rec[0]] + [b - a for a, b in zip(rec, rec[1:])] if increment else rec), r["gap"], None

    return run


def _attribution(kind: str) -> MethodFn:
    def run(pair: ModelPair, prompts: list[Prompt], bos: bool) -> tuple[list[float], float, list[int] | None]:
        r = attribution_sweep(pair, prompts, kind=kind, bos=bos)
        return r["recovered"], r["gap"], None

    return run


def _windows(pair: ModelPair, prompts: list[Prompt], bos: bool) -> tuple[list[float], float, list[int] | None]:
    """Each layer's own ``min(sufficiency, necessity)``; names the carrier window's layers (ranked first)."""
    w = window_sweep(pair, target_metric(prompts, None, bos))
    one = w["windows"]["1"]
    single = [min(a, b) for a, b in zip(one["sufficiency"], one["necessity"], strict=True)]
    carrier = carrier_window(w)
    return [x if x == x else 0.0 for x in single], w["gap"], sorted(carrier["layers"]) if carrier else []


def _mask(pair: ModelPair, prompts: list[Prompt], bos: bool) -> tuple[list[float], float, list[int] | None]:
    """Per-layer gates of the learned delta mask (REINFORCE estimator, defaults); names its rounded selection
    where grafting it carries the gap as the verdict requires (>= 0.8 both sufficient and necessary, at most
    half the layers)."""
    m = DeltaMask(seed=0).fit(pair, prompts, bos)
    metric = target_metric(prompts, None, bos)
    sel = m.recovery(pair, metric, max_k=1)["selected"] if m.selected_ else None
    carries = sel is not None and VerdictConfig().carries(sel, pair.n_layers)
    return list(m.layer_gates_), metric(pair.tuned) - metric(pair.base), sorted(sel["layers"]) if carries else []


def _weights(pair: ModelPair, prompts: list[Prompt], bos: bool) -> tuple[list[float], float, list[int] | None]:
    """Relative weight change per layer; the gap is measured as for every method (it gates the flags)."""
    from alignloc.analyses.weights import weight_diff

    w = weight_diff(pair.base.model.state_dict(), pair.tuned.model.state_dict(), pair.base.family, pair.n_layers)
    metric = target_metric(prompts, None, bos)
    return [row["relative_frobenius"] for row in w["layers"]], metric(pair.tuned) - metric(pair.base), None


METHODS: dict[str, MethodFn] = {
    "weight_diff": _weights,
    "graft_window": _windows,
    "delta_mask": _mask,
    "graft_sufficiency": _graft("sufficiency"),
    "graft_necessity": _graft("necessity"),
    "patch_resid_increment": _patch("resid_post", increment=True),
    "patch_attn_out": _patch("attn_out"),
    "patch_mlp_out": _patch("mlp_out"),
    "attribution_attn_out": _attribution("attn_out"),
    "attribution_mlp_out": _attribution("mlp_out"),
}


def rank_layers(scores: list[float], first: list[int] | None = None) -> list[int]:
    """Layers by descending score (``first``, a method's named layers, ahead of the rest; NaN last; equal
    scores in layer order here, and scored as ties by ``hits``)."""
    named = set(first or [])
    return sorted(range(len(scores)), key=lambda i: (i not in named, math.isnan(scores[i]),
                                                     -scores[i] if not math.isnan(scores[i]) else 0, i))


def tie_groups(ranking: list[int], scores: list[float], first: list[int] | None = None) -> list[list[int]]:
    """``ranking`` cut into groups of equal rank (same named-or-not and the same score; NaNs tie)."""
    named = set(first or [])

    def key(i: int) -> tuple:
        return (i in named, "nan" if math.isnan(scores[i]) else scores[i])

    groups: list[list[int]] = []
    for i in ranking:
        if groups and key(groups[-1][0]) == key(i):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def hits(ranking: list[int], planted: list[int], groups: list[list[int]] | None = None) -> tuple[float, float]:
    """``(hit@1, hit@k)`` of a layer ranking against the planted layers (``k = len(planted)``), each the
    expectation over random orders of tied layers (``groups``: ``tie_groups``; default no ties)."""
    groups = [[i] for i in ranking] if groups is None else groups
    k, want = len(planted), set(planted)
    h1 = len(want & set(groups[0])) / len(groups[0])
    found, room = 0.0, k
    for g in groups:
        take = min(room, len(g))
        found += take * len(want & set(g)) / len(g)
        room -= take
        if room == 0:
            break
    return h1, found / k


def flagged(method: str, scores: list[float], gap: float, min_gap: float, flag_at: float,
            named: list[int] | None = None) -> list[int]:
    """Layers a method reports as carrying an effect on a null pair (see the module docstring)."""
    if not abs(gap) >= min_gap:
        return []
    if named is not None:
        return sorted(named)
    floor = MIN_FLOOR["weights"] if method == "weight_diff" else flag_at
    return [i for i, s in enumerate(scores) if s >= floor]


def chance(organisms: dict[str, dict], n_layers: int) -> dict:
    """A random ranking's expected hit@1 and the best constant answer's (one layer for every organism)."""
    planted = [set(r["planted"]) for r in organisms.values()]
    if not planted:
        return {"random_hit@1": math.nan, "constant_layer": None, "constant_hit@1": math.nan}
    per_layer = [sum(layer in p for p in planted) / len(planted) for layer in range(n_layers)]
    best = max(range(n_layers), key=lambda i: (per_layer[i], -i))
    return {"random_hit@1": sum(len(p) / n_layers for p in planted) / len(planted), "constant_layer": best,
            "constant_hit@1": per_layer[best]}


def mean_ci(values: list[float], n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean and 95% percentile bootstrap interval over ``values`` (organisms)."""
    import torch

    if not values:
        return math.nan, math.nan, math.nan
    t = torch.tensor(values, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    means = t[torch.randint(len(t), (n_boot, len(t)), generator=g)].mean(1)
    return float(t.mean()), float(means.quantile(0.025)), float(means.quantile(0.975))
