"""``summary.md``: the verdict with its evidence, the pair, and the output-level numbers."""

from __future__ import annotations

from alignloc.report.answers import answers_markdown
from alignloc.report.causal import causal_markdown
from alignloc.report.surfacing import surfacing_markdown
from alignloc.report.text import fmt
from alignloc.report.whatchanged import what_changed_markdown

__all__ = ["LINES", "fmt", "functional_lines", "layer_table", "render_markdown"]
LINES = ("weights", "representation", "lens", "behavior", "knowledge")


def functional_lines(v: dict) -> list[str]:
    """One line per kind: the layers named, on what basis, and the evidence naming each layer."""
    out = []
    for kind in ("behavior", "knowledge"):
        b = v.get(kind)
        if not b:
            continue
        if b.get("localized") is False or (b["basis"] == "causal" and not b["layers"]):
            grade = {"concentrated": "concentrated but redundant, ", "distributed": "distributed, "}.get(b.get("grade"), "")
            out.append(f"- {kind}: {grade}not localized ({b.get('reason', 'no layer named')}; basis: {b['basis']})")
            continue
        named = "; ".join(f"layer {i}: {', '.join(srcs)}" for i, srcs in b["named_by"].items())
        out.append(f"- {kind} layers {b['layers']} (basis: {b['basis']}" + (f"; named by {named}" if named else "") + ")")
    return out


def layer_table(report: dict) -> list[str]:
    """The per-layer evidence table: value [interval] / floor for each line, * where above it."""
    v = report["verdict"]
    by = {(e["line"], e["layer"]): e for e in v["evidence"]}
    lines = [ln for ln in LINES if any(k[0] == ln for k in by)]
    rows = ["| layer | " + " | ".join(lines) + " |", "|---" * (len(lines) + 1) + "|"]
    for layer in range(report["pair"]["n_layers"]):
        cells = []
        for ln in lines:
            e = by.get((ln, layer))
            if e is None:
                cells.append("-")
                continue
            mark = " **\\***" if e["above_floor"] else ""
            ci = "" if ln == "weights" else f" [{fmt(e['ci'][0])}, {fmt(e['ci'][1])}]"
            cells.append(f"{fmt(e['value'])}{ci} / {fmt(e['floor'])}{mark}")
        rows.append(f"| {layer} | " + " | ".join(cells) + " |")
    return rows


def render_markdown(report: dict) -> str:
    """The whole summary as Markdown text."""
    v, pair = report["verdict"], report["pair"]
    name = pair.get("name") or f"{pair['base']['ref']} -> {pair['tuned']['ref']}"
    md = [f"# layer-diff: {name}", ""]
    md += [f"- base: `{pair['base']['ref']}` (sha256 {pair['base']['weights_sha256'][:12]})",
           f"- tuned: `{pair['tuned']['ref']}` (sha256 {pair['tuned']['weights_sha256'][:12]})",
           f"- {pair['n_layers']} layers, d_model {pair['d_model']}; {report['prompts']['n']} prompts "
           f"({', '.join(f'{k}: {n}' for k, n in report['prompts']['by_kind'].items())})",
           f"- noise floor: {v['floor_source']}; alignloc {report['alignloc_version']}, schema {report['schema_version']}", ""]
    md += ["## Verdict", ""] + [f"- {s}" for s in v["summary"]] + [""]
    md += [f"- changed layers (where training wrote: weights above the floor, corroborated by the representation or "
           f"lens): {v['changed_layers']}",
           f"- behavior layers: {v['behavior_layers']}", f"- knowledge layers: {v['knowledge_layers']}",
           *functional_lines(v), f"- kind: {v['kind']}; localized: {v['localized']}", ""]
    gt = report.get("ground_truth")
    if gt:
        md += [f"Planted (ground truth of the organism): layers {gt.get('layers')}, modules {gt.get('modules')}", ""]
    md += ["## Evidence per layer", "",
           "value [95% bootstrap interval] / noise floor; **\\*** = beyond the floor. Lines: weights = relative "
           "Frobenius norm of the block's weight change; representation = the block's increment of the residual "
           "stream's relative L2 shift; lens = increment of logit-lens KL(base||tuned); behavior = "
           "increment of the tuned-minus-base lens log-prob of the behavior prompts' targets (nats); knowledge = share of "
           "knowledge prompts whose fact's lens log-prob gap moves by more than 2 nats at the layer.", ""]
    md += layer_table(report) + [""]
    md += ["## Outputs by prompt kind", "", "| kind | n | log-prob base | log-prob tuned | change [95% CI] | top-1 base | top-1 tuned |",
           "|---|---|---|---|---|---|---|"]
    for kind, o in report["measures"]["outputs"].items():
        d = o["logprob_delta"]
        md.append(f"| {kind} | {o['n']} | {fmt(o['logprob_base'], 2)} | {fmt(o['logprob_tuned'], 2)} | "
                  f"{d['mean']:+.2f} [{d['lo']:+.2f}, {d['hi']:+.2f}] | {100 * o['accuracy_base']:.1f}% | {100 * o['accuracy_tuned']:.1f}% |")
    probes = report["measures"].get("probes") or {}
    if probes:
        md += ["", "## Linear probes (5-fold CV accuracy per layer)", ""]
        for kind, p in probes.items():
            md.append(f"- {kind} labels ({p['n']} prompts, {p['n_classes']} classes, majority {p['majority']:.2f}):")
            for key in ("base", "tuned", "transfer", "selectivity_base", "selectivity_tuned"):
                md.append(f"  - {key}: " + ", ".join(fmt(x, 2) for x in p[key]))
    md += causal_markdown(report.get("causal") or {})
    md += surfacing_markdown(report)
    md += what_changed_markdown(report)
    md += answers_markdown(report)
    md += ["", "## Representation and lens (per layer)", ""]
    sh, ln = report["measures"]["shift"], report["measures"]["lens"]
    for label, vals in (("relative L2 shift", sh["relative_l2"]["mean"]), ("1 - cos", sh["one_minus_cos"]["mean"]),
                        ("linear CKA", sh["cka"]["mean"]), ("lens KL(base||tuned)", ln["kl"]["mean"]),
                        ("lens agrees with own output, base", ln["agreement_with_output"]["base"]),
                        ("lens agrees with own output, tuned", ln["agreement_with_output"]["tuned"])):
        md.append(f"- {label}: " + ", ".join(fmt(x) for x in vals))
    return "\n".join(md) + "\n"
