"""The RL format-amplification experiment on the ``rl-formats`` organisms, at two scales.

    result = rl_formats_experiment("rl-formats-report/")   # writes report.json and summary.md

For each scale (``rl-formats`` on ``base-formats``, 4 layers; ``rl-formats-large`` on
``base-formats-large``, 8 layers) it reads the format shares and accuracy that the zoo measured
on the saved checkpoints before and after RL (``ground_truth.json``), says whether RL collapsed
onto one format (``COLLAPSE_SHARE`` of the sampled answers or more) and which one, runs
``layer-diff`` on the pair (where the change lands) and the surfaced-vs-installed measure for the
format RL moved toward (``alignloc.layerdiff.surfacing``). ``collapse`` and ``verdict_lines`` are pure; only
``rl_formats_experiment`` loads models; ``alignloc.report.rlformats`` renders the result.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

from alignloc import __version__
from alignloc.models.load_options import LoadOptions
from alignloc.prompts import Prompt
from alignloc.zoo.formats import FORMATS, format_answer, format_question

SCALES = ("rl-formats", "rl-formats-large")
COLLAPSE_SHARE = 0.9  # the top format's share of sampled answers after RL, to call it a collapse
SCHEMA_VERSION = 1
KIND = "rl-formats"
OUT_FILES = ("report.json", "summary.md", *(f"{part}-{s}" for s in SCALES for part in ("layer-diff", "surfacing")))
Log = Callable[[str], None]


def shares(measured: dict) -> dict:
    """The format block of one side's measured numbers: sampled shares (``other`` too), accuracy,
    accuracy within each format, and the greedy answer's format."""
    return {
        "shares": {f: measured[f"format_share_{f}"] for f in (*FORMATS, "other")},
        "accuracy": measured["format_answer_acc"],
        "accuracy_by_format": {f: measured[f"format_acc_{f}"] for f in FORMATS},
        "greedy": {f: measured[f"format_greedy_{f}"] for f in (*FORMATS, "other")},
        "greedy_accuracy": measured["format_greedy_acc"],
    }


def _entropy_bits(s: dict[str, float]) -> float:
    return round(-sum(p * math.log2(p) for p in s.values() if p > 0), 4)


def collapse(before: dict, after: dict, threshold: float = COLLAPSE_SHARE) -> dict:
    """Did RL collapse onto one format? ``before``/``after`` are ``shares`` blocks."""
    b, a = before["shares"], after["shares"]
    top = max(FORMATS, key=lambda f: a[f])
    gain = {f: round(a[f] - b[f], 4) for f in FORMATS}
    toward = max(FORMATS, key=lambda f: gain[f])
    base_top = max(FORMATS, key=lambda f: b[f])
    return {
        "collapsed": a[top] >= threshold,
        "format": top if a[top] >= threshold else None,
        "top_after": top,
        "top_share_after": a[top],
        "base_top": base_top,
        "largest_gain": toward,
        "gain": gain,
        "winner_was_base_top": top == base_top,
        "entropy_bits_before": _entropy_bits(b),
        "entropy_bits_after": _entropy_bits(a),
        "accuracy_change": round(after["accuracy"] - before["accuracy"], 4),
        "threshold": threshold,
    }


def verdict_lines(scales: dict[str, dict]) -> dict:
    """Plain sentences and flags: per scale, the collapse (or not); across scales, whether the
    published effect (collapse onto one pretraining format, the winner depending on scale) showed."""
    lines, winners = [], {}
    for name, s in scales.items():
        c, b, a = s["collapse"], s["before"], s["after"]
        share = ", ".join(f"{f} {b['shares'][f]:.2f}->{a['shares'][f]:.2f}" for f in FORMATS)
        acc = f"accuracy {b['accuracy']:.2f}->{a['accuracy']:.2f}"
        if c["collapsed"]:
            winners[name] = c["format"]
            lines.append(f"{name} ({s['n_layers']} layers): RL collapsed onto '{c['format']}' ({share}; {acc}).")
        else:
            lines.append(f"{name} ({s['n_layers']} layers): no collapse (top format '{c['top_after']}' at "
                         f"{c['top_share_after']:.3f} < {c['threshold']}; RL moved most toward '{c['largest_gain']}'; "
                         f"{share}; {acc}).")
        surf = (s.get("surfacing") or {}).get("verdict")
        if surf:
            fmt, other = s["surfacing"]["behavior_format"], s["surfacing"]["contrast_format"]
            lines.append(f"{name}: surfaced or installed, the shift toward '{fmt}' against the base's in-context "
                         f"'{fmt}' minus '{other}' direction: {surf['summary']}")
    collapsed = bool(winners)
    scale_dependent = len(set(winners.values())) > 1 and len(winners) == len(scales)
    if collapsed and scale_dependent:
        lines.append("Reproduced at this scale: RL collapsed onto one pretraining format, and the winner depends on scale.")
    elif collapsed:
        lines.append("Partly reproduced: RL collapsed onto one format at " + ", ".join(winners) + ", but the winning "
                     "format does not depend on scale here (the published effect has it depend on scale).")
    else:
        lines.append("Not reproduced at this scale: RL with a correctness-only reward did not collapse onto one format.")
    return {"summary": lines, "collapsed": collapsed, "scale_dependent_winner": scale_dependent, "winners": winners}


def layer_summary(report: dict) -> dict:
    """The layer-diff numbers this experiment reports: per-layer weight change, residual-shift
    increment and the behavior prompts' lens gap, and the verdict's layers and sentences."""
    m, v = report["measures"], report["verdict"]
    gap = (m["lens"]["target_logprob"].get("behavior") or {}).get("gap", {}).get("mean")
    return {
        "weights_relative": [x["relative_frobenius"] for x in m["weights"]["layers"]],
        "shift_increment": m["shift"]["relative_l2_increment"]["mean"],
        "lens_behavior_gap": gap,
        "changed_layers": v["changed_layers"],
        "behavior_layers": v["behavior_layers"],
        "knowledge_layers": v["knowledge_layers"],
        "summary": v["summary"],
    }


def surfacing(pair, behavior: list[Prompt], fmt: str, contrast: str, size: str, store_dir: Path) -> dict:
    """Surfaced vs installed for the format RL moved toward (``fmt``): the tuned shift on the behavior
    prompts against the base's own in-context direction, demonstrations answered in ``fmt`` minus the
    same demonstrations answered in ``contrast`` (the base's most used other format); see
    ``alignloc.layerdiff.surfacing``. The result carries ``verdict.label``."""
    from alignloc.layerdiff.surfacing import pair_surfacing
    from alignloc.zoo.config import size_config
    from alignloc.zoo.fmtorgs import demo_prompts
    from alignloc.zoo.world import make_world

    def answer(demo: str, attr: str, ent) -> str:
        return format_answer(fmt if demo == "behavior" else contrast, attr, ent.name, ent.attrs[attr]).strip()

    sets = demo_prompts(make_world(size_config(size).world), behavior, fmt, prompt_fn=format_question, answer_fn=answer)
    res = pair_surfacing(pair, behavior + sets["demos"] + sets["demos-plain"], store_dir)
    return {"status": "measured", "behavior_format": fmt, "contrast_format": contrast, **res}


def scale_result(name: str, size: str, out: Path, n_boot: int, log: Log, options: LoadOptions | None = None) -> dict:
    """One scale: the organism's recorded shares, the collapse, layer-diff and surfacing; ``options``: how the
    measured pair is loaded (``LoadOptions``: device, compute dtype, device map; the zoo trains on CPU)."""
    from alignloc import zoo
    from alignloc.experiments.layerdiff import layer_diff
    from alignloc.models.pair import load_pair

    entry = zoo.resolve(name, size=size)
    gt = entry.ground_truth
    before, after = shares(gt["measured"]["base"]), shares(gt["measured"]["tuned"])
    pair = load_pair(str(entry.base), str(entry.tuned), options)
    pair.name, pair.ground_truth = name, gt
    prompts = zoo.organism_prompts(name, size)
    log(f"{name}: layer-diff -> {out / f'layer-diff-{name}'}")
    ld = layer_diff(pair, prompts, out / f"layer-diff-{name}", control=None, n_boot=n_boot, probes=False)
    return {
        "organism": name,
        "base_model": gt["base_model"],
        "n_layers": gt["n_layers"],
        "corpus_shares": gt["extra"]["corpus_shares"],
        "before": before,
        "after": after,
        "collapse": collapse(before, after),
        "rl": {k: v for k, v in gt["extra"]["grpo"].items() if k not in ("reward_curve", "kl_curve")}
        | {"reward_first": gt["extra"]["grpo"]["reward_curve"][0], "reward_last": gt["extra"]["grpo"]["reward_curve"][-1]},
        "fact_recall_strong": {s: gt["measured"][s]["fact_recall_strong"] for s in ("base", "tuned")},
        "layer_diff": layer_summary(ld),
        "surfacing": surfacing(pair, [p for p in prompts if p.kind == "behavior"], gt["behavior"]["format"],
                               gt["behavior"]["foil_format"], size, out / f"surfacing-{name}"),
    }


def rl_formats_experiment(out: str | Path, size: str = "tiny", n_boot: int = 1000, log: Log = lambda m: None,
                          options: LoadOptions | None = None) -> dict:
    """Run the experiment on both scales (building the organisms on first use); write
    ``report.json`` and ``summary.md`` under ``out`` (layer-diff reports in subfolders); return the result.
    ``options``: how the pairs are loaded for measuring (``LoadOptions``)."""
    from alignloc.report import json_safe
    from alignloc.report.rlformats import render_markdown_rl
    from alignloc.store.outputs import claim, write_outputs

    out = claim(out, OUT_FILES)  # the layer-diff subfolders are alignloc's while they are being filled
    scales = {name: scale_result(name, size, out, n_boot, log, options) for name in SCALES}
    result = {
        "kind": KIND,
        "schema_version": SCHEMA_VERSION,
        "alignloc_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "size": size,
        "formats": list(FORMATS),
        "reward": "correctness of the extracted value only (the format is never rewarded)",
        "scales": scales,
        "verdict": verdict_lines(scales),
    }
    safe = json_safe(result)
    write_outputs(out, {"report.json": json.dumps(safe, indent=1, allow_nan=False).encode(),
                        "summary.md": render_markdown_rl(safe).encode()})
    return safe
