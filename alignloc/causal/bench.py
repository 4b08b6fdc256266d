"""localize-bench: how often does each localization method point at the layer where the edit was planted?

Two tiers of zoo organisms whose ground truth plants the edit in some (not all) layers:

- ``easy``: the confined recipes (``chat-sft-upper|lower``, ``refusal-lora-L1|L2``,
  ``fact-edit-L1``): every other layer is bit-identical, so the weight-diff baseline already wins;
  control: ``control-continued``;
- ``hard`` (adversarial): their ``-drift`` variants, where a behavior-neutral drift moves every layer's
  weights more than the edit does, by a function-preserving rescaling chosen so, and the edit is trained
  to work grafted alone into the base (``zoo/drift.py``); control: ``control-drift`` (the drift alone);
- ``natural``: their ``-natural`` variants, the edit trained on top of that drift sequentially, with no
  rescaling and no mixture objective (``zoo.drift.natural``): weight-diff's failure is measured, not
  built in; control: ``control-drift``.

Each method scores every layer on the organism's own target metric (teacher-forced log-prob of
the targets of its behavior prompt file: format marker, refusal, new fact); layers are ranked by
score.

- ``hit@1``: the top-ranked layer is a planted one (mean over organisms, with a percentile bootstrap
  interval over organisms); layers with equal scores share their rank, and a tie counts as the share of
  planted layers in the tied group (the expected hit under a random order: no index is favored);
- ``hit@k``: the share of planted layers among the top ``k = len(planted)`` (ties counted alike);
- chance rows: a random ranking's expected hit@1 (``|planted| / L`` per organism) and the best
  constant answer (the single layer most often planted);
- control false positives, counted the same way for every method: the tier's null pair goes through
  the same methods on each prompt file, and no method flags anything unless the null pair's gap on
  that file is at least ``min_gap`` nats (the verdict's own ``causal.report.MIN_GAP`` by default); above
  it, a ranking method flags the layers that recover >= ``flag_at`` of the gap, ``graft_window`` and
  ``delta_mask`` the layers they name (the carrier window, the mask's selection that grafting shows
  carries the gap), and ``weight_diff`` the layers whose weights moved above the verdict's weight
  floor (``analyses.verdict.MIN_FLOOR``). Reported as flagged layers per task.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from alignloc.analyses.verdict import MIN_FLOOR, VerdictConfig
from alignloc.causal.attribution import attribution_sweep
from alignloc.causal.graft import carrier_window, graft_sweep, target_metric, window_sweep
from alignloc.causal.mask import DeltaMask
from alignloc.causal.report import MIN_GAP
from alignloc.models.pair import ModelPair
from alignloc.prompts import Prompt, load_prompts

# -> (score per layer, gap, the layers the method names: None for a pure ranking)
MethodFn = Callable[[ModelPair, list[Prompt], bool], tuple[list[float], float, list[int] | None]]
CONTROL = "control-continued"
TIERS = {"easy": ("", CONTROL), "hard": ("-drift", "control-drift"),  # name suffix, null pair
         "natural": ("-natural", "control-drift")}


def _graft(which: str) -> MethodFn:
    def run(pair: ModelPair, prompts: list[Prompt], bos: bool) -> tuple[list[float], float]:
        r = graft_sweep(pair, target_metric(prompts, None, bos))
        return r[which], r["gap"], None

    return run


def _patch(kind: str, increment: bool = False) -> MethodFn:
    def run(pair: ModelPair, prompts: list[Prompt], bos: bool) -> tuple[list[float], float]:
        from alignloc.causal.patching import patch_sweep

        r = patch_sweep(pair, prompts, kind=kind, positions="all", bos=bos)
        rec = r["recovered"]
        return ([rec[0]] + [b - a for a, b in zip(rec, rec[1:])] if increment else rec), r["gap"], None

    return run


def _attribution(kind: str) -> MethodFn:
    def run(pair: ModelPair, prompts: list[Prompt], bos: bool) -> tuple[list[float], float]:
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
    names = {"easy": zoo.DEFAULT_ORGANISMS, "hard": zoo.HARD_ORGANISMS, "natural": zoo.NATURAL_ORGANISMS}[tier]
    return names, TIERS[tier][1]


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
            scores, gap, named = METHODS[m](pair, prompts, True)
            ranking = rank_layers(scores, named)
            h1, hk = hits(ranking, planted, tie_groups(ranking, scores, named))
            row["methods"][m] = {"scores": scores, "gap": gap, "named": named, "ranking": ranking, "hit@1": h1, "hit@k": hk}
        row["n_layers"] = pair.n_layers
        organisms[name] = row
        log(f"[{tier}] {name}: planted {planted}; top-1 " + ", ".join(f"{m}={r['ranking'][0]}" for m, r in row["methods"].items()))
    control_name = tier_names(size, tier)[1]
    entry = zoo.resolve(control_name, size=size)
    pair = load_pair(str(entry.base), str(entry.tuned), **(placement or {}))
    control = {}
    for rel, prompts in tasks.items():
        control[rel] = {}
        for m in methods:
            scores, gap, named = METHODS[m](pair, prompts, True)
            control[rel][m] = {"scores": scores, "gap": gap, "named": named,
                               "flagged": flagged(m, scores, gap, min_gap, flag_at, named),
                               "flagged_ungated": flagged(m, scores, gap, 0.0, flag_at, named)}
    log(f"[{tier}] {control_name}: " + ", ".join(f"{m}={sum(len(t[m]['flagged']) for t in control.values())}" for m in methods))
    single = [n for n in organisms if len(organisms[n]["planted"]) == 1]
    summary = {}
    for m in methods:
        def mean(key: str, among: list[str], m: str = m) -> float:
            return sum(organisms[n]["methods"][m][key] for n in among) / len(among) if among else math.nan

        h1 = mean_ci([organisms[n]["methods"][m]["hit@1"] for n in organisms])
        summary[m] = {"hit@1": h1[0], "hit@1_ci": [h1[1], h1[2]], "hit@k": mean("hit@k", list(organisms)),
                      "hit@1_single_layer": mean("hit@1", single),
                      "control_false_positives": (sum(len(t[m]["flagged"]) for t in control.values()) / len(control)
                                                  if control else math.nan),
                      # the same without the gap gate: what the method says of the null pair's noise
                      "control_flags_ungated": (sum(len(t[m]["flagged_ungated"]) for t in control.values()) / len(control)
                                                if control else math.nan)}
    n_layers = next(iter(organisms.values()))["n_layers"] if organisms else 0
    return {"organisms_scored": list(organisms), "single_layer_organisms": single, "skipped": skipped,
            "chance": chance(organisms, n_layers), "methods": summary, "organisms": organisms, "control": {"name": control_name, "tasks": control}}


def localize_bench(size: str = "tiny", n_prompts: int = 48, methods: list[str] | None = None,
                   min_gap: float = MIN_GAP, flag_at: float = 0.5, tiers: list[str] | None = None,
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
    """The accuracy table per tier (one row per method, chance rows first) and the per-organism rankings."""
    lines = [f"# localize-bench ({result['size']} zoo, {result['n_prompts']} prompts per organism)", "",
             f"On each tier's null pair, no method flags a layer unless the pair's gap is >= {result['min_gap']} nats; "
             f"above it, a ranking method flags the layers that recover >= {result['flag_at']} of the gap, graft_window "
             "and delta_mask the layers they name, weight_diff the layers that moved above the weight floor. Ties count "
             "as the share of planted layers in the tied group; hit@1 intervals: 95% bootstrap over organisms."]
    for tier, r in result["tiers"].items():
        c = r.get("chance") or {}
        lines += ["", f"## {tier} tier", "",
                  f"Scored: {', '.join(r['organisms_scored'])}. Single-layer edits: {', '.join(r['single_layer_organisms'])}. "
                  f"Control: {r['control']['name']} (flagged layers per task).", "",
                  "Null-pair gaps per task: " + ", ".join(f"{t} {next(iter(v.values()))['gap']:+.2f}"
                                                           for t, v in r["control"]["tasks"].items()) + " nats.", "",
                  "| method | hit@1 [95% CI] | hit@1 (single-layer edits) | hit@k | control false positives | "
                  "control flags without the gap gate |", "|---|---|---|---|---|---|"]
        if c:
            lines += [f"| random ranking (expected) | {c['random_hit@1']:.2f} | | | | |",
                      f"| constant answer: layer {c['constant_layer']} | {c['constant_hit@1']:.2f} | | | | |"]
        for m, s in r["methods"].items():
            ci = s.get("hit@1_ci")
            interval = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
            lines.append(f"| {m} | {s['hit@1']:.2f}{interval} | {s['hit@1_single_layer']:.2f} | {s['hit@k']:.2f} | "
                         f"{s['control_false_positives']:.1f} | {s.get('control_flags_ungated', math.nan):.1f} |")
        lines += ["", "| organism | planted | " + " | ".join(r["methods"]) + " |", "|---|---|" + "---|" * len(r["methods"])]
        for name, row in r["organisms"].items():
            cells = [",".join(map(str, row["methods"][m]["ranking"][: max(2, len(row["planted"]))])) for m in r["methods"]]
            lines.append(f"| {name} | {row['planted']} | " + " | ".join(cells) + " |")
        lines += ["", "(per organism: the top-ranked layers of each method)"]
        if r["skipped"]:
            lines += [""] + [f"- skipped {n}: {why}" for n, why in r["skipped"].items()]
    return "\n".join(lines) + "\n"
