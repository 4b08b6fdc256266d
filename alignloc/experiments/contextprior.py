"""The context-prior experiment: can a representation edit make a model follow a context that
contradicts a strong prior, where prompting cannot?

For every configuration (none; each prompt-only fix; each intervention x layer x strength) it
measures the context-following rate on strong- and weak-prior conflicts and the collateral
damage: accuracy on agreeing-context and closed-book prompts, and perplexity on plain text.
Directions (steering, ablation) come from the model's own answers on conflicts, cross-fitted:
prompts in one half are evaluated with a direction estimated on the other half.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from alignloc.contextprior.data import FIXES, REWRITES, PromptSets, apply_fix, with_unknown_subject
from alignloc.contextprior.evaluate import (
    Batch,
    Recipe,
    batches,
    first_token,
    perplexity,
    rate,
    top1,
)
from alignloc.contextprior.heads import head_attribution, top_heads
from alignloc.interventions.directions import diff_in_means
from alignloc.interventions.specs import Ablate, PatchFrom, Scale, Steer
from alignloc.models.hooks import run_recording
from alignloc.models.pair import LoadedModel
from alignloc.report.results import ContextPriorResult
from alignloc.sites import Site

DEFAULT_INSTRUCTION = "Answer with the context , not with what you remember ."
STEER_ALPHAS = (0.5, 1.0, 2.0, 4.0)
MLP_FACTORS = (0.0, 0.5)
ATTN_FACTORS = (1.5, 2.0, 3.0)
HEAD_FACTOR = 3.0
SEARCH_K = (1, 3, 10)  # heads found by attribution (Yu et al. 2023), scaled together
SEARCH_FACTORS = (2.0, 5.0, 10.0)
BUDGET = {"agree_drop": 0.05, "closed_drop": 0.05, "ppl_ratio": 1.10}  # "small collateral damage"


@torch.no_grad()
def last_token_resid(model: LoadedModel, prompts: list, bos: bool, layers: list[int]) -> dict[int, torch.Tensor]:
    """``{layer: [n, d_model]}``: resid_post at each prompt's last token."""
    sites = [Site(layer, "resid_post") for layer in layers]
    out: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    for b in batches(model, prompts, bos):
        acts = run_recording(model.model, model.family, sites, b.ids, b.mask)
        for s in sites:
            out[s.layer].append(acts[s][torch.arange(len(b.prompts)), b.last].float())
    return {layer: torch.cat(v) for layer, v in out.items()}


def conflict_directions(model: LoadedModel, train: list, answers: torch.Tensor, bos: bool, layers: list[int]) -> dict[int, torch.Tensor]:
    """Per layer: mean resid of train conflicts the model answered from the context minus from memory.

    Falls back to weak-prior minus strong-prior conflicts when either group has fewer than 2.
    """
    tok = model.tokenizer
    follow = [i for i, p in enumerate(train) if int(answers[i]) == first_token(tok, p.target)]
    memory = [i for i, p in enumerate(train) if int(answers[i]) == first_token(tok, p.foil)]
    if min(len(follow), len(memory)) < 2:
        follow = [i for i, p in enumerate(train) if p.meta["prior"] == "weak"]
        memory = [i for i, p in enumerate(train) if p.meta["prior"] == "strong"]
    acts = last_token_resid(model, train, bos, layers)
    return {layer: diff_in_means(a[follow], a[memory]) for layer, a in acts.items()}


def swap_unknown(tokenizer, p, names: list[str], start: int):
    """``p`` with its subject renamed to an unknown entity: the first of ``names`` from ``start`` (cyclic)
    that keeps the token count (so activations can be patched position by position), else ``names[start]``."""
    if not p.positions.get("subject"):
        return p
    width = len(tokenizer.encode(p.text, add_special_tokens=False))
    order = [names[(start + k) % len(names)] for k in range(len(names))]
    for name in order:
        q = with_unknown_subject(p, name)
        if len(tokenizer.encode(q.text, add_special_tokens=False)) == width:
            return q
    return with_unknown_subject(p, order[0])


def unknown_subject_recipe(model: LoadedModel, site: Site, at: str, names: list[str], bos: bool) -> Recipe:
    """Patch ``site`` at the subject tokens (``at="subject"``) or the last token (``"last"``) from a
    run of the same prompts with the entity replaced by one the model cannot know."""

    def recipe(b: Batch) -> list:
        if not b.subject.any() or not names:
            return []
        swapped = [swap_unknown(model.tokenizer, p, names, i) for i, p in enumerate(b.prompts)]
        src = next(batches(model, swapped, bos, size=len(swapped)))
        width = b.ids.shape[1]
        if src.ids.shape != b.ids.shape:  # rows whose length changed are not patched
            src.ids = torch.nn.functional.pad(src.ids, (0, max(0, width - src.ids.shape[1])))[:, :width]
            src.mask = torch.nn.functional.pad(src.mask, (0, max(0, width - src.mask.shape[1])))[:, :width]
        has = b.subject.any(1) & (src.mask.sum(1) == b.mask.sum(1))
        acts = run_recording(model.model, model.family, [site], src.ids, src.mask)[site]
        where = b.subject if at == "subject" else b.last_mask
        return [PatchFrom(site, acts, where=where & has[:, None])]

    return recipe


def _configs(model: LoadedModel, layers: list[int], dirs: dict[int, torch.Tensor], names: list[str], bos: bool,
             heads: bool) -> list[tuple[dict, Recipe]]:
    """Every intervention configuration with its recipe (``dirs``: the direction per layer)."""
    n = model.config.num_hidden_layers
    out: list[tuple[dict, Recipe]] = []
    for layer in layers:
        v = dirs[layer]
        for a in STEER_ALPHAS:
            out.append(({"name": "steer_context_direction", "layer": layer, "strength": a},
                        lambda b, v=v, a=a, layer=layer: [Steer(Site(layer, "resid_post"), v, a, where=b.last_mask)]))
        out.append(({"name": "ablate_context_direction", "layer": layer, "strength": None},
                    lambda b, v=v, layer=layer: [Ablate(v, layers=tuple(range(layer, n)))]))
        out.append(({"name": "unknown_subject_patch_subject_tokens", "layer": layer, "strength": None},
                    unknown_subject_recipe(model, Site(layer, "resid_pre"), "subject", names, bos)))
        out.append(({"name": "unknown_subject_patch_last_token", "layer": layer, "strength": None},
                    unknown_subject_recipe(model, Site(layer, "resid_post"), "last", names, bos)))
        for f in MLP_FACTORS:
            out.append(({"name": "scale_subject_mlp", "layer": layer, "strength": f},
                        lambda b, f=f, layer=layer: [Scale(layer, "mlp", f, where=b.subject)]))
        for f in ATTN_FACTORS:
            out.append(({"name": "scale_last_token_attention", "layer": layer, "strength": f},
                        lambda b, f=f, layer=layer: [Scale(layer, "attn", f, where=b.last_mask)]))
        if heads:
            for h in range(model.config.num_attention_heads):
                out.append(({"name": f"scale_last_token_head_{h}", "layer": layer, "strength": HEAD_FACTOR, "head": h},
                            lambda b, h=h, layer=layer: [Scale(layer, "attn", HEAD_FACTOR, head=h, where=b.last_mask)]))
    return out


def searched_head_configs(ranked: list[tuple[int, int]]) -> list[tuple[dict, Recipe]]:
    """Scale the top-k heads of ``ranked`` (best first) at the last token, for each k and factor."""
    out: list[tuple[dict, Recipe]] = []
    for k in SEARCH_K:
        chosen = ranked[:k]
        for f in SEARCH_FACTORS:
            out.append(({"name": f"scale_context_heads_top{k}", "layer": chosen[0][0], "strength": f,
                         "heads": [list(h) for h in chosen]},
                        lambda b, chosen=chosen, f=f: [Scale(layer, "attn", f, head=h, where=b.last_mask) for layer, h in chosen]))
    return out


def _measure(model: LoadedModel, sets: PromptSets, bos: bool, folds: list[tuple[list, list]],
             recipes: list[Recipe | None], fix: str | None, instruction: str, gated: bool = False,
             unchanged: dict | None = None) -> tuple[dict, torch.Tensor]:
    """One configuration's rates; ``recipes[f]`` is used for fold ``f``'s conflicts (fold 0's for the rest).

    ``gated``: interventions only on prompts with a context (so closed-book prompts and plain text
    run unchanged, as they do under the prompt-only fixes). ``unchanged``: the baseline row, whose
    closed-book accuracy and perplexity a gated run reuses (it runs those inputs unchanged: the same numbers).
    """
    tok = model.tokenizer
    names = sets.unknown_names or [None]

    def fixed(ps):
        return [apply_fix(p, fix, instruction, names[i % len(names)]) for i, p in enumerate(ps)] if fix else ps

    strong_ans = torch.full((len(sets.strong),), -1)
    weak_ans = torch.full((len(sets.weak),), -1)
    for (s_idx, w_idx), recipe in zip(folds, recipes, strict=True):
        strong_ans[s_idx] = top1(model, fixed([sets.strong[i] for i in s_idx]), bos, recipe, gated)
        if w_idx:
            weak_ans[w_idx] = top1(model, fixed([sets.weak[i] for i in w_idx]), bos, recipe, gated)
    r0 = recipes[0]
    agree = top1(model, fixed(sets.agree), bos, r0, gated)
    reuse = gated and unchanged is not None and fix is None
    closed = None if reuse else top1(model, fixed(sets.closed), bos, r0, gated)
    row = {"follow_strong": rate(tok, strong_ans, sets.strong), "memory_strong": rate(tok, strong_ans, sets.strong, "foil"),
           "follow_weak": rate(tok, weak_ans, sets.weak), "memory_weak": rate(tok, weak_ans, sets.weak, "foil"),
           "acc_agree": rate(tok, agree, sets.agree),
           "acc_closed": unchanged["acc_closed"] if reuse else rate(tok, closed, sets.closed),
           "ppl": unchanged["ppl"] if reuse else perplexity(model, sets.texts, bos, None if gated else r0) if sets.texts else float("nan")}
    return row, strong_ans


def _collateral(row: dict, base: dict) -> dict:
    def drop(k: str) -> float:
        return base[k] - row[k] if not (math.isnan(base[k]) or math.isnan(row[k])) else 0.0

    ratio = row["ppl"] / base["ppl"] if base["ppl"] and not math.isnan(base["ppl"]) else 1.0
    return {"agree_drop": drop("acc_agree"), "closed_drop": drop("acc_closed"), "ppl_ratio": ratio}


def context_prior(model: LoadedModel, sets: PromptSets, bos: bool, layers: list[int] | None = None,
                  instruction: str = DEFAULT_INSTRUCTION, heads: bool = True, budget: dict | None = None,
                  gate: str = "both", head_search: bool = True, log: Callable[[str], None] = lambda m: None) -> dict:
    """Run every configuration; JSON-ready rows plus the verdict.

    ``gate``: ``always`` (interventions on every prompt and on the plain text), ``context`` (only
    on prompts that carry a context, like the prompt-only fixes) or ``both`` (each configuration twice).
    ``head_search``: also scale the heads whose direct effect most favours the context's answer
    (``heads.head_attribution`` on the other fold's conflicts, cross-fitted like the directions).
    """
    gates = {"always": (False,), "context": (True,), "both": (False, True)}.get(gate)
    if gates is None:
        raise ValueError(f"gate must be always, context or both, got {gate!r}")
    budget = {**BUDGET, **(budget or {})}
    layers = list(range(model.config.num_hidden_layers)) if layers is None else layers
    halves = [([i for i in range(len(sets.strong)) if i % 2 == f], [i for i in range(len(sets.weak)) if i % 2 == f])
              for f in (0, 1)]
    base_row, base_strong = _measure(model, sets, bos, halves, [None, None], None, instruction)
    rows = [{"name": "none", "family": "baseline", "layer": None, "strength": None, **base_row}]
    for fix in FIXES + REWRITES:
        r, _ = _measure(model, sets, bos, halves, [None, None], fix, instruction)
        rows.append({"name": fix, "family": "prompt" if fix in FIXES else "rewrite", "layer": None, "strength": None, **r})
    log(f"baseline: strong-prior conflicts follow the context {base_row['follow_strong']:.2f}, weak {base_row['follow_weak']:.2f}; "
        f"best prompt-only fix {max(r['follow_strong'] for r in rows if r['family'] == 'prompt'):.2f}")
    # cross-fitted directions: fold f is evaluated with the direction from the other fold
    all_conf = sets.strong + sets.weak
    answers = top1(model, all_conf, bos)
    dirs, ranked = [], []
    for f in (0, 1):
        train = [i for i, _ in enumerate(sets.strong) if i % 2 != f] + [len(sets.strong) + i for i, _ in enumerate(sets.weak) if i % 2 != f]
        dirs.append(conflict_directions(model, [all_conf[i] for i in train], answers[train], bos, layers))
        if head_search:
            ranked.append(top_heads(head_attribution(model, [all_conf[i] for i in train], bos), max(SEARCH_K)))
    per_fold = [_configs(model, layers, d, sets.unknown_names, bos, heads) for d in dirs]
    if head_search:
        per_fold = [cfgs + searched_head_configs(r) for cfgs, r in zip(per_fold, ranked, strict=True)]
        log(f"heads favouring the context (layer.head, best first, used on fold 0): {', '.join(f'{a}.{h}' for a, h in ranked[0])}")
    targets = torch.tensor([first_token(model.tokenizer, p.target) for p in sets.strong])
    for (spec, r0), (_, r1) in zip(per_fold[0], per_fold[1], strict=True):
        for gated in gates:
            r, strong_ans = _measure(model, sets, bos, halves, [r0, r1], None, instruction, gated, base_row)
            flips = int(((base_strong != strong_ans) & (strong_ans == targets)).sum())
            rows.append({**spec, "gated": gated, "family": "intervention", **r, "flips_to_context": flips})
    for r in rows:
        r["collateral"] = _collateral(r, base_row)
        c = r["collateral"]
        r["within_budget"] = (c["agree_drop"] <= budget["agree_drop"] and c["closed_drop"] <= budget["closed_drop"]
                              and c["ppl_ratio"] <= budget["ppl_ratio"])
    log(f"{sum(r['family'] == 'intervention' for r in rows)} intervention configurations measured")
    return {"n": {"strong": len(sets.strong), "weak": len(sets.weak), "agree": len(sets.agree),
                  "closed": len(sets.closed), "texts": len(sets.texts), "unknown_names": len(sets.unknown_names)},
            "layers": layers, "instruction": instruction, "budget": budget, "rows": rows,
            "searched_heads": [[list(h) for h in r] for r in ranked],
            "verdict": verdict(rows, budget)}


def verdict(rows: list[dict], budget: dict, large: float = 0.2) -> dict:
    """Best prompt-only fix vs best intervention within the collateral budget, on strong-prior conflicts."""
    base = rows[0]
    prompt = [r for r in rows if r["family"] == "prompt"]
    inter = [r for r in rows if r["family"] == "intervention"]
    best_p = max(prompt, key=lambda r: r["follow_strong"])
    rewrites = [r for r in rows if r["family"] == "rewrite"]
    ok = [r for r in inter if r["within_budget"]]

    def key(r):
        return (r["follow_strong"], -r["collateral"]["agree_drop"] - r["collateral"]["closed_drop"])

    best_i = max(ok, key=key) if ok else None
    best_any = max(inter, key=key) if inter else None
    margin = (best_i["follow_strong"] - best_p["follow_strong"]) if best_i else float("nan")
    summary = [
        f"strong-prior conflicts are answered from memory {base['memory_strong']:.0%} of the time and follow the context "
        f"{base['follow_strong']:.0%}; weak-prior conflicts follow it {base['follow_weak']:.0%}",
        f"best prompt-only fix: {best_p['name']} ({best_p['follow_strong']:.0%} on strong-prior conflicts)",
    ]
    if best_i:
        c = best_i["collateral"]
        summary.append(
            f"best intervention within the collateral budget: {best_i['name']} at layer {best_i['layer']}"
            + (" (only where a context is given)" if best_i.get("gated") else "")
            + (f" (strength {best_i['strength']})" if best_i["strength"] is not None else "")
            + f": {best_i['follow_strong']:.0%} ({best_i['flips_to_context']} strong-prior answers flip to the context); "
            f"agreeing-context accuracy {-c['agree_drop']:+.0%}, closed-book {-c['closed_drop']:+.0%}, perplexity x{c['ppl_ratio']:.2f}")
        summary.append(("a representation edit beats prompting by a large margin" if margin >= large else
                        "no representation edit beats the best prompt-only fix by a large margin") +
                       f" ({margin:+.0%}, large = {large:.0%})")
    else:
        summary.append("no intervention stays within the collateral budget")
    if best_any and best_any is not best_i:
        summary.append(f"ignoring collateral damage, {best_any['name']} at layer {best_any['layer']} reaches "
                       f"{best_any['follow_strong']:.0%} (agreeing-context accuracy {-best_any['collateral']['agree_drop']:+.0%}, "
                       f"closed-book {-best_any['collateral']['closed_drop']:+.0%}, perplexity x{best_any['collateral']['ppl_ratio']:.2f})")
    for r in rewrites:
        summary.append(f"input rewrite {r['name']} (not a prompt-only fix: it changes the question): "
                       f"{r['follow_strong']:.0%}, closed-book {-r['collateral']['closed_drop']:+.0%}")

    def pick(r):
        return ({k: r.get(k) for k in ("name", "layer", "strength", "head", "heads", "gated", "follow_strong", "collateral")}
                if r else None)
    return {"baseline_rate": base["follow_strong"], "baseline_memory_rate": base["memory_strong"],
            "weak_prior_rate": base["follow_weak"],
            "strong_more_from_memory_than_weak": base["memory_strong"] > base["memory_weak"],
            "best_prompt_only_rate": best_p["follow_strong"], "best_prompt_only": best_p["name"],
            "best_intervention_rate": best_i["follow_strong"] if best_i else None, "best_intervention": pick(best_i),
            "best_intervention_any_collateral": pick(best_any), "margin": margin, "large_margin": large,
            "intervention_beats_prompting": bool(best_i) and margin >= large, "summary": summary}


def context_prior_report(model: LoadedModel, sets: PromptSets, out, bos: bool, write: bool = True,
                         conflicts: dict | None = None, **options) -> ContextPriorResult:
    """Run ``context_prior`` and write ``report.json``, ``summary.md`` and ``index.html`` under ``out``; the
    ``ContextPriorResult`` (``report.results``; ``to_json()`` is report.json).

    ``conflicts``: how a named conflict set was built (``conflicts.measured_conflicts``), kept in the report."""
    import time

    from alignloc import __version__

    start = time.perf_counter()
    result = context_prior(model, sets, bos, **options)
    result["seconds"] = round(time.perf_counter() - start, 1)
    if conflicts is not None:
        result["conflicts"] = conflicts
    report = ContextPriorResult(alignloc_version=__version__, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                model=model.provenance(), **result)
    if write:
        from alignloc.report import write_report
        from alignloc.report.contextprior import render_html_cp, render_markdown_cp

        write_report(report, out, render_markdown=render_markdown_cp, render_html=render_html_cp)
    return report
