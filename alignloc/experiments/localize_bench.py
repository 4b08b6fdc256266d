"""localize-bench: how often does each localization method point at the layer where the edit was planted?

Tiers of zoo organisms whose ground truth plants the edit in some (not all) layers:

- ``easy``: the confined recipes (``chat-sft-upper|lower``, ``refusal-lora-L1|L2``,
  ``fact-edit-L1``): every other layer is bit-identical, so the weight-diff baseline already wins;
  control: ``control-continued``;
- ``hard`` (adversarial): their ``-drift`` variants, where a behavior-neutral drift moves every layer's
  weights more than the edit does, by a function-preserving rescaling chosen so, and the edit is trained
  to work grafted alone into the base (``zoo/drift.py``); control: ``control-drift`` (the drift alone);
- ``natural``: their ``-natural`` variants, the edit trained on top of that drift sequentially, with no
  rescaling and no mixture objective (``zoo.drift.natural``): weight-diff's failure is measured, not
  built in; control: ``control-drift``;
- ``natural-large``: the same on the 8-layer ``base-large``, single-layer edits at five different layers
  (a random ranking expects hit@1 = 1/8, the best constant answer 1/5); control: ``control-drift-large``.

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
  that file is at least ``min_gap`` nats (the verdict's own ``VerdictConfig.min_gap`` by default; organisms' targets are summed, so per answer); above
  it, a ranking method flags the layers that recover >= ``flag_at`` of the gap, ``graft_window`` and
  ``delta_mask`` the layers they name (the carrier window, the mask's selection that grafting shows
  carries the gap), and ``weight_diff`` the layers whose weights moved above the verdict's weight
  floor (``analyses.verdict.MIN_FLOOR``). Reported as flagged layers per task.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from alignloc import zoo
from alignloc.analyses.verdict import VerdictConfig
from alignloc.causal.bench import METHODS, chance, flagged, hits, mean_ci, rank_layers, tie_groups
from alignloc.models.load_options import LoadOptions
from alignloc.models.pair import load_pair
from alignloc.prompts import Prompt, load_prompts
from alignloc.report.results import LocalizeBenchResult
from alignloc.zoo import real
from alignloc.zoo.config import seeded_sizes

CONTROL = "control-continued"
TIERS = {"easy": ("", CONTROL), "hard": ("-drift", "control-drift"),  # name suffix, null pair
         "natural": ("-natural", "control-drift"), "natural-large": ("-natural-large", "control-drift-large")}
DEFAULT_TIERS = ("easy", "hard")  # the tiers of the default zoo build; natural and natural-large build more organisms


def _task_prompts(entry, n: int) -> tuple[str, list[Prompt]]:
    """The organism's behavior prompt file (relative path) and its first ``n`` prompts with a target."""
    rel = entry.ground_truth["behavior"]["prompts"]
    return rel, [p for p in load_prompts(entry.path / rel) if p.target][:n]


def tier_names(size: str, tier: str) -> tuple[list[str], str]:
    """The organisms of a tier and its null pair (the real-weight tier: ``alignloc.zoo.real``)."""
    if size == real.SIZE:
        easy = [n for n in real.ORGANISMS if n != "smollm2-control-drift" and not n.endswith("-drift")]
        return (easy if tier == "easy" else ["smollm2-format-upper-drift"]), "smollm2-control-drift"
    names = {"easy": zoo.DEFAULT_ORGANISMS, "hard": zoo.HARD_ORGANISMS, "natural": zoo.NATURAL_ORGANISMS,
             "natural-large": zoo.NATURAL_LARGE_ORGANISMS}[tier]
    return names, TIERS[tier][1]


def scored_organisms(size: str, tier: str = "easy") -> tuple[list[str], dict[str, str]]:
    """Organisms of a tier with a planted subset of layers, and the skipped ones with the reason (an edit that spans
    every layer, or a recipe that missed its specification with every training seed in this world: a seed
    variant's world may not give it the margin the default world does)."""
    keep, skipped = [], {}
    names, control = tier_names(size, tier)
    for name in names:
        if name == control:
            continue
        try:
            gt = zoo.resolve(name, size=size).ground_truth
        except zoo.ZooError as e:  # the names are the tier's own: the recipe missed its specification in this seed
            skipped[name] = f"not built: {e}"
            continue
        layers, n = gt.get("layers") or [], gt.get("n_layers")
        if not layers or len(layers) == n:
            skipped[name] = "edit spans every layer: nothing to localize"
        else:
            keep.append(name)
    return keep, skipped


def _tier(sizes: list[str], tier: str, n_prompts: int, methods: list[str], min_gap: float, flag_at: float,
          log: Callable[[str], None], options: LoadOptions | None = None) -> dict:
    """One tier: every method on every scored organism and on the tier's null pair, in each of ``sizes`` (a size
    and its seed variants: organisms and null-pair tasks are then named ``NAME@SIZE`` and pooled)."""
    organisms, control, skipped = {}, {}, {}
    control_name = tier_names(sizes[0], tier)[1]
    for size in sizes:
        at = "" if len(sizes) == 1 else f"@{size}"
        names, skip = scored_organisms(size, tier)
        skipped |= {f"{n}{at}": why for n, why in skip.items()}
        tasks = {}
        for name in names:
            entry = zoo.resolve(name, size=size)
            pair = load_pair(str(entry.base), str(entry.tuned), options)
            rel, prompts = _task_prompts(entry, n_prompts)
            tasks.setdefault(rel, prompts)
            planted = entry.ground_truth["layers"]
            row = {"planted": planted, "prompts": rel, "n": len(prompts), "methods": {}}
            for m in methods:
                scores, gap, named = METHODS[m](pair, prompts, True)
                ranking = rank_layers(scores, named)
                h1, hk = hits(ranking, planted, tie_groups(ranking, scores, named))
                row["methods"][m] = {"scores": scores, "gap": gap, "named": named, "ranking": ranking, "hit@1": h1,
                                     "hit@k": hk}
            row["n_layers"] = pair.n_layers
            organisms[f"{name}{at}"] = row
            log(f"[{tier}] {name}{at}: planted {planted}; top-1 "
                + ", ".join(f"{m}={r['ranking'][0]}" for m, r in row["methods"].items()))
        entry = zoo.resolve(control_name, size=size)
        pair = load_pair(str(entry.base), str(entry.tuned), options)
        for rel, prompts in tasks.items():
            control[f"{rel}{at}"] = {}
            for m in methods:
                scores, gap, named = METHODS[m](pair, prompts, True)
                control[f"{rel}{at}"][m] = {"scores": scores, "gap": gap, "named": named,
                                            "flagged": flagged(m, scores, gap, min_gap, flag_at, named),
                                            "flagged_ungated": flagged(m, scores, gap, 0.0, flag_at, named)}
        log(f"[{tier}] {control_name}{at}: " + ", ".join(
            f"{m}={sum(len(t[m]['flagged']) for k, t in control.items() if k.endswith(at))}" for m in methods))
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
            "chance": chance(organisms, n_layers), "methods": summary, "organisms": organisms,
            "control": {"name": control_name, "tasks": control}}


def localize_bench(size: str = "tiny", n_prompts: int = 48, methods: list[str] | None = None,
                   min_gap: float = VerdictConfig.min_gap, flag_at: float = 0.5, tiers: list[str] | None = None,
                   log: Callable[[str], None] = lambda m: None, options: LoadOptions | None = None,
                   seeds: int = 1) -> LocalizeBenchResult:
    """Run every method on every scored organism of each tier and on its control: a ``LocalizeBenchResult``
    (``to_json()`` is the report.json that ``alignloc localize-bench`` writes).

    ``options``: how every pair is loaded (``LoadOptions``: device, compute dtype, device map). ``seeds``: pool
    the organisms of ``size`` and its first ``seeds - 1`` seed variants (``zoo.config.seeded_sizes``: another
    world and training seed each), so that hit@1's interval is over that many more organisms. ``tiers``: default
    ``DEFAULT_TIERS`` (those of the default zoo build)."""
    methods = list(METHODS) if methods is None else methods
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    tiers = list(DEFAULT_TIERS) if tiers is None else tiers
    bad = [t for t in tiers if t not in TIERS]
    if bad:
        raise ValueError(f"unknown tier(s) {bad}; choose from {list(TIERS)}")
    sizes = [size] if size == real.SIZE else seeded_sizes(size, seeds)
    return LocalizeBenchResult(size=size, n_prompts=n_prompts, min_gap=min_gap, flag_at=flag_at, methods_run=methods,
                               seeds=sizes,
                               tiers={t: _tier(sizes, t, n_prompts, methods, min_gap, flag_at, log, options) for t in tiers})
