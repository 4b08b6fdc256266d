"""The proxy-tuning experiment: decoding-time shift vs weight fine-tuning, on knowledge and behavior.

Configurations: small base, small tuned, large base, large tuned directly (when given), and the
proxy ``large base + beta * (small tuned - small base)`` at each beta. For each, from greedy
generations: fact recall (first generated token = the fact, by ``meta.prior``) on knowledge
prompts and the behavior rate (the generation starts with the prompt's ``target``) on behavior
prompts. Plus where the shift acts (the share of generated positions whose argmax the shift
changes, for fact vs style tokens) and the 2x2 emulated fine-tuning grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from alignloc.decoding.proxy import Proxy, Single, combine, generate
from alignloc.models.pair import LoadedModel
from alignloc.prompts import Prompt
from alignloc.report.results import ProxyTuneResult
from alignloc.tokens import encode_prompts, pad_batch, pad_id

BETAS = (0.0, 0.5, 1.0, 1.5)


def _first(tok, s: str) -> int:
    return tok.encode(s, add_special_tokens=False)[0]


def evaluate(model: Single | Proxy, knowledge: list[Prompt], behavior: list[Prompt], bos: bool) -> dict:
    """Fact recall (overall and per ``meta.prior``), behavior rate and, where prompts name
    ``meta.answer``, the answer after the behavior marker; with the behavior generations."""
    tok = model.tokenizer
    out: dict = {}
    if knowledge:
        first = [g[0] for g in generate(model, knowledge, 1, bos)]
        hits = [f == _first(tok, p.target) for f, p in zip(first, knowledge, strict=True)]
        out["fact_recall"] = sum(hits) / len(hits)
        out["_hits"] = hits  # per prompt, for retention; proxy_tune drops it from the result
        for prior in sorted({p.meta.get("prior") for p in knowledge if p.meta.get("prior")}):
            h = [x for x, p in zip(hits, knowledge, strict=True) if p.meta.get("prior") == prior]
            out[f"fact_recall_{prior}"] = sum(h) / len(h)
    if behavior:
        n = max(len(tok.encode(p.target, add_special_tokens=False)) for p in behavior) + 1
        gens = generate(model, behavior, n, bos)
        starts, answers = [], []
        for p, g in zip(behavior, gens, strict=True):
            t = tok.encode(p.target, add_special_tokens=False)
            starts.append(g[: len(t)] == t)
            if p.meta.get("answer"):
                answers.append(starts[-1] and g[len(t)] == _first(tok, p.meta["answer"]))
        out["behavior_rate"] = sum(starts) / len(starts)
        if answers:
            out["answer_after_marker"] = sum(answers) / len(answers)
        out["generations"] = [tok.decode(g) for g in gens]
    return out


@torch.no_grad()
def shift_analysis(proxy: Proxy, prompts: list[Prompt], fact_tokens: set[int], bos: bool, n_new: int = 4) -> dict:
    """Where the shift acts along the proxy's own greedy generations.

    At each generated position: does the argmax of the proxy differ from the large base's, and
    ``p_proxy(token) - p_base(token)`` of the token the proxy chose; split by fact tokens (values
    of facts) vs all other (format / style) tokens.
    """
    tok = proxy.tokenizer
    gens = generate(proxy, prompts, n_new, bos)
    ctx = encode_prompts(tok, prompts, bos=bos).ids
    ids, mask = pad_batch([c + g for c, g in zip(ctx, gens, strict=True)], pad_id(tok))
    from alignloc.analyses.outputs import scored_index

    lb, le, la = proxy.parts(ids, mask, scored_index([len(c) for c in ctx], gens))  # column j: generated token j
    lp = combine(lb, le, la, proxy.beta)
    stats = {"fact": [0, 0, 0.0], "style": [0, 0, 0.0]}  # [positions, changed, sum of prob shift]
    for r, g in enumerate(gens):
        for j, t in enumerate(g):
            cls = "fact" if t in fact_tokens else "style"
            s = stats[cls]
            s[0] += 1
            s[1] += int(lp[r, j].argmax() != lb[r, j].argmax())
            s[2] += float(lp[r, j, t].exp() - lb[r, j, t].exp())
    total = stats["fact"][0] + stats["style"][0]
    return {"positions": total, "changed_fraction": (stats["fact"][1] + stats["style"][1]) / max(total, 1),
            **{f"{k}_positions": v[0] for k, v in stats.items()},
            **{f"{k}_changed_fraction": v[1] / v[0] if v[0] else math.nan for k, v in stats.items()},
            **{f"{k}_mean_prob_shift": v[2] / v[0] if v[0] else math.nan for k, v in stats.items()}}


def retention(anchor_hits: list[bool], hits: list[bool]) -> float:
    """The share of the prompts ``anchor_hits`` gets right that ``hits`` also gets right (NaN if none)."""
    kept = [h for a, h in zip(anchor_hits, hits, strict=True) if a]
    return sum(kept) / len(kept) if kept else math.nan


def gap_closed(value: float, base: float, target: float) -> float:
    """``(value - base) / (target - base)`` (NaN when the gap is 0)."""
    return (value - base) / (target - base) if target != base else math.nan


def proxy_tune(large_base: LoadedModel, small_base: LoadedModel, small_tuned: LoadedModel, knowledge: list[Prompt],
               behavior: list[Prompt], bos: bool, large_tuned: LoadedModel | None = None, betas=BETAS,
               log: Callable[[str], None] = lambda m: None) -> dict:
    """Every configuration's metrics, the shift analysis, the EFT grid and the verdict (JSON-ready)."""
    configs: dict[str, Single | Proxy] = {"small base": Single(small_base), "small tuned": Single(small_tuned),
                                          "large base": Single(large_base)}
    if large_tuned is not None:
        configs["large tuned (weights)"] = Single(large_tuned)
    for b in betas:
        configs[f"proxy beta={b:g}"] = Proxy(large_base, small_tuned, small_base, b)
    if large_tuned is not None:  # EFT's other off-diagonal cell: small pretraining, large fine-tuning
        configs["emulated: small base + (large tuned - large base)"] = Proxy(small_base, large_tuned, large_base, 1.0)
    rows = {}
    for name, m in configs.items():
        rows[name] = evaluate(m, knowledge, behavior, bos)
        log(f"{name}: fact recall {rows[name].get('fact_recall', math.nan):.2f}, behavior {rows[name].get('behavior_rate', math.nan):.2f}")
    lb = rows["large base"]
    ref = rows.get("large tuned (weights)") or rows["small tuned"]
    for name, r in rows.items():
        r["behavior_gap_closed"] = gap_closed(r["behavior_rate"], lb["behavior_rate"], ref["behavior_rate"]) if behavior else math.nan
        # against the small fine-tune's own rate: the stricter reading when the large twin is the weaker chat model
        r["behavior_gap_closed_vs_small_tuned"] = (gap_closed(r["behavior_rate"], lb["behavior_rate"],
                                                              rows["small tuned"]["behavior_rate"]) if behavior else math.nan)
        r["knowledge_delta_vs_large_base"] = r["fact_recall"] - lb["fact_recall"] if knowledge else math.nan
        anchor = rows["small base" if name.startswith(("small", "emulated")) else "large base"]  # what it could lose
        r["fact_retention"] = retention(anchor.get("_hits", []), r.get("_hits", []))
    for r in rows.values():
        r.pop("_hits", None)
    fact_tokens = {_first(large_base.tokenizer, s) for p in knowledge for s in (p.target, p.foil) if s}
    proxy1 = Proxy(large_base, small_tuned, small_base, 1.0)
    shift = shift_analysis(proxy1, behavior + knowledge, fact_tokens, bos)
    grid = None
    if large_tuned is not None:
        cell = {"small pretraining, small fine-tuning": "small tuned",
                "large pretraining, small fine-tuning (emulated)": "proxy beta=1",
                "small pretraining, large fine-tuning (emulated)": "emulated: small base + (large tuned - large base)",
                "large pretraining, large fine-tuning": "large tuned (weights)"}
        grid = {k: {"config": v, "fact_recall": rows[v].get("fact_recall"), "behavior_rate": rows[v].get("behavior_rate")}
                for k, v in cell.items()}
    return {"configs": rows, "betas": list(betas), "shift": shift, "eft_grid": grid,
            "verdict": verdict(rows, shift, grid)}


def verdict(rows: dict, shift: dict, grid: dict | None) -> dict:
    """Does the decoding-time shift close the behavior gap while keeping the large model's knowledge?"""
    p1, lb = rows["proxy beta=1"], rows["large base"]
    direct = rows.get("large tuned (weights)")
    betas = sorted((float(k.split("=")[1]), r["behavior_rate"]) for k, r in rows.items() if k.startswith("proxy beta="))
    summary = [f"proxy-tuning (beta = 1) closes {p1['behavior_gap_closed']:.0%} of the behavior gap "
               f"({p1['behavior_gap_closed_vs_small_tuned']:.0%} against the small tuned model's own rate) "
               f"(behavior rate {lb['behavior_rate']:.2f} -> {p1['behavior_rate']:.2f}) and changes the large base's fact "
               f"recall by {p1['knowledge_delta_vs_large_base']:+.1%}"]
    if direct:
        summary.append(f"fine-tuning the large model's weights directly: behavior {direct['behavior_rate']:.2f}, fact recall "
                       f"{direct['knowledge_delta_vs_large_base']:+.1%} vs the large base")
    summary.append("behavior rate by beta: " + ", ".join(f"{b:g}: {r:.2f}" for b, r in betas))
    summary.append(f"the shift changes the argmax at {shift['changed_fraction']:.0%} of generated positions: "
                   f"{shift['style_changed_fraction']:.0%} of format/style tokens, {shift['fact_changed_fraction']:.0%} of fact tokens")
    out = {"behavior_gap_closed": p1["behavior_gap_closed"], "knowledge_delta_vs_large_base": p1["knowledge_delta_vs_large_base"],
           "behavior_gap_closed_vs_small_tuned": p1["behavior_gap_closed_vs_small_tuned"],
           "small_tuned_fact_retention": rows["small tuned"]["fact_retention"], "proxy_fact_retention": p1["fact_retention"],
           "direct_knowledge_delta_vs_large_base": direct["knowledge_delta_vs_large_base"] if direct else None,
           "behavior_rate_by_beta": dict(betas), "monotone_in_beta": all(a[1] <= b[1] + 1e-9 for a, b in zip(betas, betas[1:]))}
    if grid:
        g, keys = grid, list(grid)
        pt = (g[keys[1]]["fact_recall"] + g[keys[3]]["fact_recall"]) / 2 - (g[keys[0]]["fact_recall"] + g[keys[2]]["fact_recall"]) / 2
        ft = (g[keys[2]]["behavior_rate"] + g[keys[3]]["behavior_rate"]) / 2 - (g[keys[0]]["behavior_rate"] + g[keys[1]]["behavior_rate"]) / 2
        out.update(pretraining_scale_effect_on_facts=pt, finetuning_scale_effect_on_behavior=ft)
        summary.append(f"EFT grid: going to the large pretrained model changes fact recall by {pt:+.2f} on average, going to "
                       f"the large fine-tuning changes the behavior rate by {ft:+.2f}")
    out["goal"] = goal_check(rows)
    summary.append(out["goal"]["summary"])
    out["summary"] = summary
    return out


GOAL = {"behavior_gap_closed": 0.88, "knowledge_delta_vs_large_base": -0.01}  # Liu et al. 2024: 88-91% at 13B/70B


def _goal_value(r: dict, metric: str) -> float:
    """The gap closed counts against the weaker of the two references (the large twin, the small fine-tune)."""
    if metric == "behavior_gap_closed" and "behavior_gap_closed_vs_small_tuned" in r:
        return min(r[metric], r["behavior_gap_closed_vs_small_tuned"])
    return r[metric]


def goal_check(rows: dict) -> dict:
    """Does the proxy at beta = 1 reach ``GOAL`` (gap closed and fact recall vs the large base), by how much it
    falls short, and at which betas both hold. The gap closed is the smaller of the gap to the large model tuned
    by weights and the gap to the small tuned model's own behavior rate (a weak large twin cannot pass it)."""
    p1 = rows["proxy beta=1"]
    short = {k: max(0.0, lo - _goal_value(p1, k)) if not math.isnan(p1[k]) else math.nan for k, lo in GOAL.items()}
    ok = [float(k.split("=")[1]) for k, r in rows.items() if k.startswith("proxy beta=")
          and all(_goal_value(r, m) >= lo - 1e-9 for m, lo in GOAL.items())]
    met = all(v == 0.0 for v in short.values())
    text = (f"goal (gap closed >= {GOAL['behavior_gap_closed']:.0%}, fact recall >= large base "
            f"{GOAL['knowledge_delta_vs_large_base']:+.0%}) at beta = 1: " + ("met" if met else "not met, short by " + ", ".join(
                f"{v:.3f} in {k}" for k, v in short.items() if v != 0.0)) + "; both hold at beta = "
            + (", ".join(f"{b:g}" for b in sorted(ok)) if ok else "none"))
    return {**{f"{k}_min": v for k, v in GOAL.items()}, "met": met, "shortfall": short, "met_at_betas": sorted(ok), "summary": text}


def organism_summary(label: str, result: dict) -> dict:
    """One organism's row: its small model's retention, and the proxy's gap closed and fact recall
    vs the large base at beta = 1 and at every beta (from a ``proxy_tune`` result)."""
    c, v = result["configs"], result["verdict"]
    by_beta = {k.split("=")[1]: {"behavior_gap_closed": r["behavior_gap_closed"], "behavior_rate": r["behavior_rate"],
                                 "goal_gap_closed": _goal_value(r, "behavior_gap_closed"),
                                 "knowledge_delta_vs_large_base": r["knowledge_delta_vs_large_base"]}
               for k, r in c.items() if k.startswith("proxy beta=")}
    return {"organism": label, "small_tuned_fact_retention": v["small_tuned_fact_retention"],
            "small_tuned_behavior_rate": c["small tuned"]["behavior_rate"],
            "large_tuned_behavior_rate": c.get("large tuned (weights)", {}).get("behavior_rate"),
            "behavior_gap_closed": v["behavior_gap_closed"], "knowledge_delta_vs_large_base": v["knowledge_delta_vs_large_base"],
            "behavior_gap_closed_vs_small_tuned": v["behavior_gap_closed_vs_small_tuned"],
            "proxy_behavior_rate": c["proxy beta=1"]["behavior_rate"], "proxy_fact_retention": v["proxy_fact_retention"],
            "direct_knowledge_delta_vs_large_base": v["direct_knowledge_delta_vs_large_base"],
            "goal_met": v["goal"]["met"], "shortfall": v["goal"]["shortfall"], "by_beta": by_beta}


def side_by_side(results: dict[str, dict]) -> dict:
    """``{"rows": [organism_summary...], "summary": [...]}`` for ``{label: proxy_tune result}``."""
    rows = [organism_summary(k, r) for k, r in results.items()]
    lines = [f"{r['organism']} (its small model keeps {r['small_tuned_fact_retention']:.0%} of the small base's facts): "
             f"the proxy (behavior rate {r['proxy_behavior_rate']:.2f}) closes {r['behavior_gap_closed']:.0%} of the behavior "
             f"gap to its large twin (rate {r['large_tuned_behavior_rate']:.2f}) and "
             f"{r['behavior_gap_closed_vs_small_tuned']:.0%} of the gap to the small tuned model's rate, fact recall "
             f"{100 * r['knowledge_delta_vs_large_base']:+.1f} pt vs the large base (keeps {r['proxy_fact_retention']:.0%} "
             f"of its facts); goal {'met' if r['goal_met'] else 'not met'}" for r in rows]
    return {"rows": rows, "summary": lines}


def split_prompts(prompts: list[Prompt]) -> tuple[list[Prompt], list[Prompt]]:
    """The knowledge and the behavior prompts that have a target; PromptFormatError if either group is empty."""
    knowledge = [p for p in prompts if p.kind == "knowledge" and p.target]
    behavior = [p for p in prompts if p.kind == "behavior" and p.target]
    if not knowledge or not behavior:
        from alignloc.prompts import PromptFormatError

        raise PromptFormatError(f"proxy-tune needs prompts of kind 'knowledge' and 'behavior' with a 'target', got "
                                f"{len(knowledge)} and {len(behavior)} (add both kinds to the prompt file)")
    return knowledge, behavior


def proxy_tune_report(large_base: LoadedModel, small_base: LoadedModel, small_tuned: LoadedModel, prompts: list[Prompt],
                      out, bos: bool, large_tuned: LoadedModel | None = None, betas=BETAS, layer_diff_large: bool = True,
                      write: bool = True, log: Callable[[str], None] = lambda m: None,
                      contrast: dict | None = None) -> ProxyTuneResult:
    """Run ``proxy_tune`` on the knowledge and behavior prompts of ``prompts``; write the report under ``out``
    and return it, a ``ProxyTuneResult`` (``report.results``; ``to_json()`` is report.json).

    ``contrast`` (``{"label", "small_tuned", "large_tuned"}``): a second small tuned model (and its large
    twin) run on the same prompts and bases, kept under ``contrast`` and compared in ``side_by_side``
    (``alignloc.experiments.proxytune_zoo``).

    With ``large_tuned`` and ``layer_diff_large``, also runs layer-diff on (large base, large tuned)
    under ``out/large-layer-diff``: which layers weight fine-tuning changed, and what it cost.
    """
    import time
    from pathlib import Path

    from alignloc import __version__

    knowledge, behavior = split_prompts(prompts)
    result = proxy_tune(large_base, small_base, small_tuned, knowledge, behavior, bos, large_tuned, betas, log)
    report = {"schema_version": 1, "alignloc_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "models": {k: m.provenance() for k, m in (("large_base", large_base), ("small_base", small_base),
                                                        ("small_tuned", small_tuned), ("large_tuned", large_tuned)) if m},
              "n": {"knowledge": len(knowledge), "behavior": len(behavior)}, **result}
    if contrast is not None:
        log(f"contrast: {contrast['label']}")
        other = proxy_tune(large_base, small_base, contrast["small_tuned"], knowledge, behavior, bos,
                           contrast.get("large_tuned"), betas, log)
        report["contrast"] = {"organism": contrast["label"], "models": {k: contrast[k].provenance() for k in
                                                                        ("small_tuned", "large_tuned") if contrast.get(k)}, **other}
        report["side_by_side"] = side_by_side({small_tuned.ref: result, contrast["label"]: other})
    if large_tuned is not None and layer_diff_large:
        from alignloc.experiments.layerdiff import layer_diff
        from alignloc.models.pair import ModelPair

        ld = layer_diff(ModelPair(base=large_base, tuned=large_tuned, name="large tuned (weights)"), prompts,
                        Path(out) / "large-layer-diff", n_boot=200, probes=False, write=write)
        v, o = ld["verdict"], ld["measures"]["outputs"].get("knowledge", {})
        report["weight_finetuning_layer_diff"] = {
            "changed_layers": v["changed_layers"], "behavior_layers": v["behavior_layers"],
            "knowledge_layers": v["knowledge_layers"], "kind": v["kind"], "summary": v["summary"],
            "knowledge_top1_base": o.get("accuracy_base"), "knowledge_top1_tuned": o.get("accuracy_tuned"),
            "report": str(Path(out) / "large-layer-diff" / "index.html")}
        log("layer-diff of the directly tuned large model: changed layers " + str(v["changed_layers"]))
    report = ProxyTuneResult(**report)
    if write:
        from alignloc.report import write_report
        from alignloc.report.proxytune import render_html_pt, render_markdown_pt

        write_report(report, out, render_markdown=render_markdown_pt, render_html=render_html_pt)
    return report
