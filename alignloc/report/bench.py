"""The localize-bench tables in Markdown, from its JSON-ready result (``alignloc.experiments.localize_bench``)."""

from __future__ import annotations

import math


def render_bench_markdown(result: dict) -> str:
    """The accuracy table per tier (one row per method, chance rows first) and the per-organism rankings."""
    seeds = result.get("seeds") or [result["size"]]
    zoo = f"{result['size']} zoo" if len(seeds) == 1 else f"{result['size']} zoo, {len(seeds)} seeds: {', '.join(seeds)}"
    lines = [f"# localize-bench ({zoo}, {result['n_prompts']} prompts per organism)", "",
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
