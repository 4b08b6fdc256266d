"""layer-diff end to end: collect a pair (and an optional control pair), measure, judge, report.

    report = layer_diff(pair, prompts, "report/")     # also writes index.html, report.json, summary.md
    report = layer_diff(pair, prompts, "report/", LayerDiffConfig(n_boot=200, causal=True))

``report`` is a ``LayerDiffResult`` (``alignloc.report.results``): ``report.to_json()`` is ``report.json``
and ``report["verdict"]`` reads it like that dict; ``layerdiff.measures.measure(data)`` and
``analyses.verdict.verdict`` are the notebook-level entry points when the material is already
collected. ``default_control`` picks a zoo organism's null pair.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from alignloc import __version__
from alignloc.analyses.verdict import VerdictConfig, verdict
from alignloc.layerdiff.collect import collect
from alignloc.layerdiff.config import LayerDiffConfig
from alignloc.layerdiff.measures import kind_index, measure
from alignloc.layerdiff.surfacing import demo_residuals, split_demos, surfacing_measures
from alignloc.layerdiff.whatchanged import what_changed as what_changed_block
from alignloc.models.load_options import LoadOptions
from alignloc.models.pair import LoadedModel, ModelPair, check_pair
from alignloc.prompts import Prompt, prompts_hash
from alignloc.report.results import LayerDiffResult

SCHEMA_VERSION = LayerDiffResult.SCHEMA_VERSION  # the result type owns it (report.results)
SCHEMA_NOTES = (
    "2 (+what_changed): measures.what_changed (on by default; layer_diff(what_changed=False) leaves it out) reads the "
    "per-layer mean tuned-minus-base residual difference through the tuned model's final norm + unembedding (minus its "
    "reading of zero), on the first k_tokens of each line of the bundled generic corpus (generic) and on the behavior "
    "prompts' own tokens (prompts; all prompts when none is a behavior prompt): per layer norm, relative_norm, changed "
    "and the top promoted / demoted tokens ({id, token, logit}), and a heatmap table (layer x tokens); kl gives "
    "KL(tuned || base) along the teacher-forced targets: mean_by_position, n_by_position, top_tokens (by mean KL where "
    "the token is the one predicted) and output_shift (tokens whose output probability rose / fell most) "
    "(analyses.difflens, layerdiff.whatchanged); its cost is timings.what_changed_seconds, kept out of measures so that "
    "measures depend on the inputs only. "
    "2 (+surfacing): with demonstration rows among the prompts (meta.demo = behavior|plain, matched by meta.pair; "
    "left out of every other measure), measures.surfacing gives per layer the share of the tuned-minus-base mean shift "
    "on behavior prompts inside the base's in-context behavior subspace, the amplification along the base's behavior "
    "direction, the nulls and the floor, and verdict.surfacing its label (surfaced | installed | mixed / below noise "
    "floor; analyses.surfacing). "
    "2: the verdict names behavior and knowledge layers from functional evidence: with --causal, the smallest "
    "layer set that grafting shows sufficient and necessary for most of the gap (graft windows, the learned delta "
    "mask; causal.localize) or 'not localized'; without it, the logit-lens lines (marked correlational). Weights "
    "corroborate and no longer gate; changed_layers = representation or lens above the floor; verdict.behavior / "
    "verdict.knowledge list the evidence naming each layer (named_by); causal.graft is replaced by "
    "causal.localize (windows of every size, mask, patching). 1: weights above the floor and corroborated."
)
CONTROL_ORGANISM = "control-continued"


def examples(prompts: list[Prompt], per_kind: int = 3) -> list[dict]:
    """The first few prompts of each kind, as shown in the reports."""
    seen: Counter = Counter()
    out = []
    for p in prompts:
        if seen[p.kind] < per_kind:
            seen[p.kind] += 1
            out.append({"id": p.id, "kind": p.kind, "text": p.text, "target": p.target})
    return out


def default_control(pair: ModelPair, size: str | None = None, options: LoadOptions | None = None) -> LoadedModel | None:
    """For a zoo organism: its own drift-only model (``-drift`` organisms), else the zoo's
    continued-pretraining control on the same base, if it exists (loaded with ``options``); from the
    zoo ``size`` (default: the pair's own, ``zoo:NAME@SIZE``, else tiny)."""
    size = size or pair.zoo_size or "tiny"
    if pair.name is None or pair.name in (CONTROL_ORGANISM, "control-drift"):
        return None
    from alignloc import zoo
    from alignloc.models.pair import load_model

    try:
        own = zoo.resolve(pair.name, size=size, build_missing=False)
    except (FileNotFoundError, ValueError):
        own = None
    if own is not None and own.drift is not None:
        control = load_model(str(own.drift), options)
        control.meta["zoo"] = f"{pair.name}:drift"
        control.meta["twin"] = True
        return control
    from alignloc.zoo import real

    if real.is_real(pair.name):  # the real tier's null pair: continued pretraining without the edit
        try:
            entry = zoo.resolve("smollm2-control-drift", build_missing=False)
        except FileNotFoundError:
            return None
        control = load_model(str(entry.tuned), options)
        control.meta["zoo"] = "smollm2-control-drift:tuned"
        return control

    try:
        entry = zoo.resolve(CONTROL_ORGANISM, size=size)
    except (FileNotFoundError, ValueError):
        return None
    control = load_model(str(entry.tuned), options)
    control.meta["zoo"] = f"{CONTROL_ORGANISM}:tuned"
    return control if control.weights_hash != pair.base.weights_hash and _same_base(entry, pair) else None


def _same_base(entry, pair: ModelPair) -> bool:
    from alignloc.zoo import weights_sha256

    return weights_sha256(entry.base) == weights_sha256(Path(pair.base.path)) if pair.base.path else False


def layer_diff(
    pair: ModelPair,
    prompts: list[Prompt],
    out: str | Path,
    config: LayerDiffConfig | None = None,
    *,
    control: LoadedModel | None = None,
    store: str | Path | None = None,
    overwrite: bool = False,
    write: bool = True,
    answers: dict | None = None,
    **settings: Any,
) -> LayerDiffResult:
    """Compare ``pair`` layer by layer on ``prompts``; write the report under ``out`` and return it: a
    ``LayerDiffResult`` (``report.results``), whose ``to_json()`` is ``report.json`` and which also reads
    as that dict (``report["verdict"]``).

    ``config``: a :class:`LayerDiffConfig`, how to measure; ``settings``: its fields as keywords, replacing
    those of ``config`` (``layer_diff(pair, prompts, out, n_boot=200, probes=False)``). The fields:
    ``n_boot``, ``seed``, ``probes``, ``batch_size``, ``backend``, ``what_changed``, ``one_at_a_time``,
    ``causal``, ``budget``, ``windows``, ``mask_steps``, ``versus_control``, ``verdict`` (the verdict's
    thresholds, a ``VerdictConfig``).

    Activations go to ``store`` (default ``out/acts``) and are reused when it already holds the
    same capture. ``control`` (same base, trained without the edit) sets the noise floors.
    Demonstration rows (``meta.demo``) are set aside for the surfaced-vs-installed measure
    (``measures.surfacing``; ``alignloc.layerdiff.surfacing``).
    ``causal`` adds graft windows (sizes ``windows``), the learned delta mask (``mask_steps``; 0
    skips it; both default to the ``budget``'s, ``causal.budget``, whose plan is printed first), cross-model
    and within-model patching and attribution (``report["causal"]``, see
    ``alignloc.causal.report``), and the verdict names layers from them. ``one_at_a_time`` holds
    one model in memory at a time while collecting (``collect``); the causal tests need both.
    ``what_changed`` adds ``measures.what_changed``, the activation-difference lens (tokens the
    tuned-minus-base difference promotes per layer, on generic text and on the prompts, and the KL
    along the targets; ``alignloc.layerdiff.whatchanged``): two short forward passes per model.
    ``answers``: the block of ``alignloc.layerdiff.answers.answer_targets`` when the targets are the tuned
    model's own answers; it goes into the report as ``answers``.
    ``versus_control`` (with ``causal``) localizes the gap again on the pair (control, tuned): the part of the
    gap the control does not share (``causal.report.versus_control``). That part is the edit's own only where
    the control is the tuned model's training without the edit, so it defaults to True for such a twin
    (``control.meta["twin"]``: a ``-drift`` organism's drift-only model) and to False for a control trained
    on its own (the zoo's continued-pretraining control), where it would cost a second localization and
    mix the two models' changes.
    """
    cfg = LayerDiffConfig.build(config, **settings)
    n_boot, seed, probes, batch_size, backend = cfg.n_boot, cfg.seed, cfg.probes, cfg.batch_size, cfg.backend
    one_at_a_time, what_changed, causal, budget = cfg.one_at_a_time, cfg.what_changed, cfg.causal, cfg.budget
    windows = list(cfg.windows) if cfg.windows is not None else None
    mask_steps, versus_control, config = cfg.mask_steps, cfg.versus_control, cfg.verdict
    out = Path(out)
    torch.manual_seed(seed)
    if one_at_a_time and control is not None and control.loader is not None:
        control.release()
    demos, prompts = split_demos(prompts)
    data = collect(pair, prompts, store or out / "acts", batch_size, backend, overwrite, one_at_a_time)
    m = measure(data, n_boot, seed, probes)
    timings = {}
    if what_changed:  # before the control: with one_at_a_time the control releases the tuned model
        t0 = time.perf_counter()
        m["what_changed"] = what_changed_block(pair, prompts, batch_size=batch_size, backend=backend,
                                               one_at_a_time=one_at_a_time)
        timings["what_changed_seconds"] = round(time.perf_counter() - t0, 3)
    control_block, cm, cdata = None, None, None
    if control is not None:
        if one_at_a_time and pair.tuned.loader is not None:
            pair.tuned.release()
        cpair = ModelPair(base=pair.base, tuned=control, name="control")
        check_pair(pair.base, control)
        cdata = collect(cpair, prompts, out / "acts-control", batch_size, backend, overwrite, one_at_a_time,
                        reuse_base=data)  # the base's activations and log-probs are the pair's own
        cm = measure(cdata, n_boot, seed, probes=False)
        control_block = {"model": control.provenance(), "measures": cm}
    beh = kind_index(data).get("behavior")
    if demos and beh is not None:  # surfaced vs installed (analyses.surfacing)
        demo = demo_residuals(pair, demos, out / "acts-demos", batch_size, backend, overwrite)
        rp = {side: data.acts[side]["resid_post"][:, beh] for side in ("base", "tuned")}
        ctrl = cdata.acts["tuned"]["resid_post"][:, beh] if cdata is not None else None
        m["surfacing"] = surfacing_measures(rp["base"], rp["tuned"], demo, h_control=ctrl)
    localization = None
    causal_block = None
    if causal:
        from alignloc.causal import budget as budgets
        from alignloc.causal.localize import moved_prompts
        from alignloc.causal.report import causal_report

        spend = budgets.get(budget)
        windows = spend.window_sizes(pair.n_layers, windows)
        mask_steps = spend.mask_steps if mask_steps is None else mask_steps
        moved = moved_prompts([p if p.kind == "knowledge" else dataclasses.replace(p, target=None) for p in prompts],
                              data.target_lp["base"], data.target_lp["tuned"])
        bos = bool(data.store.manifest["bos"])
        if versus_control is None:
            versus_control = control is not None and bool(control.meta.get("twin"))
        versus_control = versus_control and control is not None
        bars = config or VerdictConfig()  # the bars the verdict reads the causal evidence with
        plan = budgets.announce(pair, prompts, moved, spend, windows, mask_steps, bos, versus_control, bars)
        causal_block = causal_report(pair, prompts, bos, n=spend.n, moved=moved, sizes=windows, mask_steps=mask_steps,
                                     n_boot=n_boot, seed=seed, patch_extras=spend.patch_extras,
                                     triage=spend.triage, verdict=bars)
        causal_block["plan"] = plan
        localization = dict(causal_block["localize"])
        if versus_control:  # the part of the gap the control does not share
            from alignloc.causal.report import versus_control as localize_vs_control

            vs = localize_vs_control(pair, control, prompts, bos, n=spend.n, sizes=windows, mask_steps=mask_steps,
                                     n_boot=n_boot, seed=seed, triage=spend.triage, verdict=bars)
            causal_block["versus_control"] = vs
            if "behavior" in vs:
                localization["behavior_vs_control"] = vs["behavior"]
    report = {
        "schema_version": SCHEMA_VERSION,
        "schema_notes": SCHEMA_NOTES,
        "alignloc_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "pair": {"name": pair.name, "base": pair.base.provenance(), "tuned": pair.tuned.provenance(),
                 "n_layers": pair.n_layers, "d_model": pair.base.d_model},
        "ground_truth": pair.ground_truth,
        "prompts": {"n": len(prompts), "by_kind": dict(Counter(p.kind for p in prompts)),
                    "sha256": prompts_hash(prompts), "store": str(data.store.root),
                    "examples": examples(prompts)},
        "settings": {"n_boot": n_boot, "seed": seed, "backend": backend, "positions": "last"},
        "measures": m,
        "control": control_block,
        "verdict": verdict(m, cm, config, localization),
        "timings": timings,
    }
    report = LayerDiffResult(**report, causal=causal_block, answers=answers)
    if write:
        from alignloc.report import write_report

        write_report(report, out)
    return report
