"""localize-bench: how often does each localization method point at the layer where the edit was planted?

Two tiers of zoo organisms whose ground truth plants the edit in some (not all) layers:

- ``easy``: the confined recipes (``chat-sft-upper|lower``, ``refusal-lora-L1|L2``,
  ``fact-edit-L1``): every other layer is bit-identical, so the weight-diff baseline already wins;
  control: ``control-continued``;
- ``hard``: their ``-drift`` variants, where a behavior-neutral drift moves every layer's weights
  more than the edit does (``zoo/drift.py``); control: ``control-drift`` (the drift alone).

Each method scores every layer on the organism's own target metric (teacher-forced log-prob of
the targets of its behavior prompt file: format marker, refusal, new fact); layers are ranked by
score.

- ``hit@1``: the top-ranked layer is a planted one (mean over organisms);
- ``hit@k``: the share of planted layers among the top ``k = len(planted)``;
- control false positives: the tier's null pair goes through the same methods on each prompt
  file; a layer is *flagged* when a causal method recovers >= ``flag_at`` of a gap of at least
  ``min_gap`` nats (the window and mask methods: when it is in the carrier set they name), or,
  for the weight baseline, when its weights changed at all. Reported as flagged layers per task.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from alignloc.analyses.verdict import VerdictConfig
from alignloc.causal.attribution import attribution_sweep
from alignloc.causal.graft import carrier_window, graft_sweep, target_metric, window_sweep
from alignloc.causal.mask import DeltaMask
from alignloc.models.pair import ModelPair
from alignloc.prompts import Prompt, load_prompts

MethodFn = Callable[[ModelPair, list[Prompt], bool], tuple[list[float], float]]  # -> (score per layer, gap)
CONTROL = "control-continued"
TIERS = {"easy": ("", CONTROL), "hard": ("-drift", "control-drift")}  # name suffix, null pair


def _graft(which: str) -> MethodFn:
    def run(pair: ModelPair, prompts: list[Prompt], bos: bool) -> tuple[list[float], float]:
        r = graft_sweep(pair, target_metric(prompts, None, bos))
        return r[which], r["gap"]

    return run


def _patch(kind: str, increment: bool = False) -> MethodFn:
    def run(pair: ModelPair, prompts: list[Prompt], bos: bool) -> tuple[list[float], float]:
        from alignloc.causal.patching import patch_sweep

        r = patch_sweep(pair, prompts, kind=kind, positions="all", bos=bos)
        rec = r["recovered"]
        return ([rec[0]] + [b - a for a, b in zip(rec, rec[1:])] if increment else rec), r["gap"]

    return run


def _attribution(kind: str) -> MethodFn:
    def run(pair: ModelPair, prompts: list[Prompt], bos: bool) -> tuple[list[float], float]:
        r = attribution_sweep(pair, prompts, kind=kind, bos=bos)
        return r["recovered"], r["gap"]

    return run


def _windows(pair: ModelPair, prompts: list[Prompt], bos: bool) -> tuple[list[float], float]:
    """Layers of the carrier window first (by their own sufficiency x necessity), then the rest."""
    w = window_sweep(pair, target_metric(prompts, None, bos))
    one = w["windows"]["1"]
    single = [min(a, b) for a, b in zip(one["sufficiency"], one["necessity"], strict=True)]
    carrier = carrier_window(w)
    inside = set(carrier["layers"]) if carrier else set()
    return [(2.0 if i in inside else 0.0) + (x if x == x else 0.0) for i, x in enumerate(single)], w["gap"]


def _mask(pair: ModelPair, prompts: list[Prompt], bos: bool) -> tuple[list[float], float]:
    """Per-layer gates of the learned delta mask (REINFORCE estimator, defaults); the rounded
    selection scores 2 more when grafting it carries the gap as the verdict requires (>= 0.8 both
    sufficient and necessary, at most half the layers), so it is flagged only where the verdict would name it."""
    m = DeltaMask(seed=0).fit(pair, prompts, bos)
    metric = target_metric(prompts, None, bos)
    sel = m.recovery(pair, metric, max_k=1)["selected"] if m.selected_ else None
    carries = sel is not None and VerdictConfig().carries(sel, pair.n_layers)
    named = set(sel["layers"]) if carries else set()
    return [(2.0 if i in named else 0.0) + g for i, g in enumerate(m.layer_gates_)], metric(pair.tuned) - metric(pair.base)


def _weights(pair: ModelPair, prompts: list[Prompt], bos: bool) -> tuple[list[float], float]:
    from alignloc.analyses.weights import weight_diff

    w = weight_diff(pair.base.model.state_dict(), pair.tuned.model.state_dict(), pair.base.family, pair.n_layers)
    return [row["relative_frobenius"] for row in w["layers"]], math.nan


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


def rank_layers(scores: list[float]) -> list[int]:
    """Layers by descending score (NaN last, ties by layer index)."""
    return sorted(range(len(scores)), key=lambda i: (math.isnan(scores[i]), -scores[i] if not math.isnan(scores[i]) else 0, i))


def hits(ranking: list[int], planted: list[int]) -> tuple[float, float]:
    """``(hit@1, hit@k)`` of a layer ranking against the planted layers (``k = len(planted)``)."""
    k = len(planted)
    return float(ranking[0] in planted), len(set(ranking[:k]) & set(planted)) / k


def flagged(method: str, scores: list[float], gap: float, min_gap: float, flag_at: float) -> list[int]:
    """Layers a method would report as carrying an effect (see the module docstring)."""
    if method == "weight_diff":
        return [i for i, s in enumerate(scores) if s > 0]
    if not abs(gap) >= min_gap:
        return []
    if method in ("graft_window", "delta_mask"):  # the layers they name (carrier set) score >= 2
        return [i for i, s in enumerate(scores) if s >= 2.0]
    return [i for i, s in enumerate(scores) if s >= flag_at]


def _task_prompts(entry, n: int) -> tuple[str, list[Prompt]]:
    """The organism's behavior prompt file (relative path) and its first ``n`` prompts with a target."""
    rel = entry.ground_truth["behavior"]["prompts"]
    return rel, [p for p in load_prompts(entry.path / rel) if p.target][:n]


def tier_names(size: str, tier: str) -> tuple[list[str], str]:
    """The organisms of a tier and its null pair (the real-weight tier: ``alignloc.zoo.real``)."""
    from alignloc import zoo
    from alignloc.zoo import real

    if size == real.SIZE:
        easy = [n for n in real.ORGANISMS if n != "smollm2-control-drift" and not n.endswith("-drift")]
        return (easy if tier == "easy" else ["smollm2-format-upper-drift"]), "smollm2-control-drift"
    return (zoo.DEFAULT_ORGANISMS if tier == "easy" else zoo.HARD_ORGANISMS), TIERS[tier][1]


def scored_organisms(size: str, tier: str = "easy") -> tuple[list[str], dict[str, str]]:
    """Organisms of a tier with a planted subset of layers, and the skipped ones with the reason."""
    from alignloc import zoo

    keep, skipped = [], {}
    names, control = tier_names(size, tier)
    for name in names:
        if name == control:
            continue
        gt = zoo.resolve(name, size=size).ground_truth
        layers, n = gt.get("layers") or [], gt.get("n_layers")
        if not layers or len(layers) == n:
            skipped[name] = "edit spans every layer: nothing to localize"
        else:
            keep.append(name)
    return keep, skipped


def _tier(size: str, tier: str, n_prompts: int, methods: list[str], min_gap: float, flag_at: float,
          log: Callable[[str], None], placement: dict | None = None) -> dict:
    """One tier: every method on every scored organism and on the tier's null pair."""
    from alignloc import zoo
    from alignloc.models.pair import load_pair

    names, skipped = scored_organisms(size, tier)
    organisms, tasks = {}, {}
    for name in names:
        entry = zoo.resolve(name, size=size)
        pair = load_pair(str(entry.base), str(entry.tuned), **(placement or {}))
        rel, prompts = _task_prompts(entry, n_prompts)
        tasks.setdefault(rel, prompts)
        planted = entry.ground_truth["layers"]
        row = {"planted": planted, "prompts": rel, "n": len(prompts), "methods": {}}
        for m in methods:
            scores, gap = METHODS[m](pair, prompts, True)
            ranking = rank_layers(scores)
            h1, hk = hits(ranking, planted)
            row["methods"][m] = {"scores": scores, "gap": gap, "ranking": ranking, "hit@1": h1, "hit@k": hk}
        organisms[name] = row
        log(f"[{tier}] {name}: planted {planted}; top-1 " + ", ".join(f"{m}={r['ranking'][0]}" for m, r in row["methods"].items()))
    control_name = tier_names(size, tier)[1]
    entry = zoo.resolve(control_name, size=size)
    pair = load_pair(str(entry.base), str(entry.tuned), **(placement or {}))
    control = {}
    for rel, prompts in tasks.items():
        control[rel] = {}
        for m in methods:
            scores, gap = METHODS[m](pair, prompts, True)
            control[rel][m] = {"scores": scores, "gap": gap, "flagged": flagged(m, scores, gap, min_gap, flag_at)}
    log(f"[{tier}] {control_name}: " + ", ".join(f"{m}={sum(len(t[m]['flagged']) for t in control.values())}" for m in methods))
    single = [n for n in organisms if len(organisms[n]["planted"]) == 1]
    summary = {}
    for m in methods:
        def mean(key: str, among: list[str], m: str = m) -> float:
            return sum(organisms[n]["methods"][m][key] for n in among) / len(among) if among else math.nan

        summary[m] = {"hit@1": mean("hit@1", list(organisms)), "hit@k": mean("hit@k", list(organisms)),
                      "hit@1_single_layer": mean("hit@1", single),
                      "control_false_positives": (sum(len(t[m]["flagged"]) for t in control.values()) / len(control)
                                                  if control else math.nan)}
    return {"organisms_scored": list(organisms), "single_layer_organisms": single, "skipped": skipped,
            "methods": summary, "organisms": organisms, "control": {"name": control_name, "tasks": control}}


def localize_bench(size: str = "tiny", n_prompts: int = 48, methods: list[str] | None = None,
                   min_gap: float = 1.0, flag_at: float = 0.5, tiers: list[str] | None = None,
                   log: Callable[[str], None] = lambda m: None, placement: dict | None = None) -> dict:
    """Run every method on every scored organism of each tier and on its control; JSON-ready results.

    ``placement``: ``load_pair`` keywords (device, compute_dtype, device_map) for every pair."""
    methods = list(METHODS) if methods is None else methods
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    tiers = list(TIERS) if tiers is None else tiers
    bad = [t for t in tiers if t not in TIERS]
    if bad:
        raise ValueError(f"unknown tier(s) {bad}; choose from {list(TIERS)}")
    return {"size": size, "n_prompts": n_prompts, "min_gap": min_gap, "flag_at": flag_at, "methods_run": methods,
            "tiers": {t: _tier(size, t, n_prompts, methods, min_gap, flag_at, log, placement) for t in tiers}}


def render_bench_markdown(result: dict) -> str:
    """The accuracy table per tier (one row per method) and the per-organism rankings, as Markdown."""
    lines = [f"# localize-bench ({result['size']} zoo, {result['n_prompts']} prompts per organism)", "",
             f"A causal method flags a control layer that recovers >= {result['flag_at']} of a gap >= "
             f"{result['min_gap']} nats (graft_window and delta_mask: the layers they name); weight_diff flags every "
             "layer whose weights changed."]
    for tier, r in result["tiers"].items():
        lines += ["", f"## {tier} tier", "",
                  f"Scored: {', '.join(r['organisms_scored'])}. Single-layer edits: {', '.join(r['single_layer_organisms'])}. "
                  f"Control: {r['control']['name']} (flagged layers per task).", "",
                  "| method | hit@1 | hit@1 (single-layer edits) | hit@k | control false positives |", "|---|---|---|---|---|"]
        for m, s in r["methods"].items():
            lines.append(f"| {m} | {s['hit@1']:.2f} | {s['hit@1_single_layer']:.2f} | {s['hit@k']:.2f} | "
                         f"{s['control_false_positives']:.1f} |")
        lines += ["", "| organism | planted | " + " | ".join(r["methods"]) + " |", "|---|---|" + "---|" * len(r["methods"])]
        for name, row in r["organisms"].items():
            cells = [",".join(map(str, row["methods"][m]["ranking"][: max(2, len(row["planted"]))])) for m in r["methods"]]
            lines.append(f"| {name} | {row['planted']} | " + " | ".join(cells) + " |")
        lines += ["", "(per organism: the top-ranked layers of each method)"]
        if r["skipped"]:
            lines += [""] + [f"- skipped {n}: {why}" for n, why in r["skipped"].items()]
    return "\n".join(lines) + "\n"
