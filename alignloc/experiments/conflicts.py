"""Knowledge-conflict sets built from real facts (``--conflicts NAME``), for models with real weights.

The zoo ships its own conflict prompts; a real pretrained model needs facts it has seen many times.
A named set turns the real capitals of ``alignloc.zoo.realfacts`` into the prompt groups of
``contextprior.data`` (``conflict``, ``agree``, ``none``, ``novel``), each ending in the cloze
``The capital of C is`` so that the answer is the next token:

- ``capitals``: the context states the counterfactual as ``Note: X is the capital of C.``
  (on SmolLM2-135M the remembered capital wins against this context);
- ``capitals-direct``: ``Context: The capital of C is X.`` on its own line (the cloze repeats the
  context's words, which small models mostly copy).

Which facts are strong priors is measured, never assumed: a conflict is ``strong`` when the model
answers its closed-book cloze correctly (first token, greedy), ``weak`` otherwise
(``measured_conflicts``). Counterfactual values are other countries' capitals, chosen with a seeded
generator among those whose first word starts differently, so that the context's answer and the
remembered one differ in their first token.
"""

from __future__ import annotations

import random
import re
from collections.abc import Collection

from alignloc.prompts import Prompt
from alignloc.zoo.realfacts import CLOZE, FACTS, MORE_FACTS, UNKNOWN_PLACES

SETS: dict[str, str] = {
    "capitals": "Note: {context} {cloze}",
    "capitals-direct": "Context: {context}\n{cloze}",
}
STATEMENT = {"capitals": "{v} is the capital of {c}.", "capitals-direct": "The capital of {c} is {v}."}


def countries() -> list[tuple[str, str]]:
    """``(country, capital)`` of every fact a conflict set uses."""
    return [(c, v) for c, v, _ in FACTS + MORE_FACTS]


def _slug(s: str) -> str:
    return re.sub(r"\W+", "-", s.lower()).strip("-")


def counterfactuals(seed: int = 0) -> dict[str, str]:
    """``{country: another country's capital}`` whose first word starts with other letters than the true one's."""
    rng = random.Random(f"capitals-{seed}")
    caps = [v for _, v in countries()]
    return {c: rng.choice([x for x in caps if x.split()[0][:3] != v.split()[0][:3]]) for c, v in countries()}


def prompt_text(name: str, country: str, value: str) -> tuple[str, str]:
    """``(text, context)`` of set ``name``: the context asserts that ``value`` is the capital of ``country``."""
    context = STATEMENT[name].format(c=country, v=value)
    return SETS[name].format(context=context, cloze=CLOZE.format(c=country)), context


def conflict_prompts(name: str, known: Collection[str], seed: int = 0) -> list[Prompt]:
    """Every prompt of set ``name``; ``known``: the countries whose capital the model recalls closed-book
    (their conflicts get ``meta.prior = "strong"``, the others ``"weak"``)."""
    if name not in SETS:
        raise ValueError(f"unknown conflict set {name!r}; choose from {', '.join(SETS)}")
    cf = counterfactuals(seed)
    out: list[Prompt] = []
    for c, v in countries():
        meta = {"prior": "strong" if c in known else "weak", "entity": c, "memory": f" {v}", "set": name}
        text, context = prompt_text(name, c, cf[c])
        out.append(Prompt(id=f"{name}-conflict-{_slug(c)}", text=text, kind="context", target=f" {cf[c]}",
                          foil=f" {v}", label=cf[c], positions={"subject": c, "last": -1}, context=context,
                          meta={**meta, "condition": "conflict", "counterfactual": f" {cf[c]}"}))
        text, context = prompt_text(name, c, v)
        out.append(Prompt(id=f"{name}-agree-{_slug(c)}", text=text, kind="context", target=f" {v}", label=v,
                          positions={"subject": c, "last": -1}, context=context, meta={**meta, "condition": "agree"}))
        out.append(Prompt(id=f"{name}-none-{_slug(c)}", text=CLOZE.format(c=c), kind="context", target=f" {v}",
                          label=v, positions={"subject": c, "last": -1}, meta={**meta, "condition": "none"}))
    rng = random.Random(f"novel-{seed}")
    caps = [v for _, v in countries()]
    for place in UNKNOWN_PLACES:
        v = rng.choice(caps)
        text, context = prompt_text(name, place, v)
        out.append(Prompt(id=f"{name}-novel-{_slug(place)}", text=text, kind="context", target=f" {v}", label=v,
                          positions={"subject": place, "last": -1}, context=context,
                          meta={"prior": "novel", "entity": place, "condition": "novel", "set": name}))
    return out


def measured_conflicts(model, name: str, bos: bool, seed: int = 0) -> tuple[list[Prompt], dict]:
    """Set ``name`` with priors measured on ``model`` (greedy closed-book cloze); conflicts whose context
    answer and remembered answer share a first token are dropped, and the agreeing-context and closed-book
    prompts kept are those of facts the model knows (so a drop there is knowledge lost). Also ``info``."""
    from alignloc.contextprior.evaluate import first_token, top1

    closed = [p for p in conflict_prompts(name, (), seed) if p.meta["condition"] == "none"]
    answers = top1(model, closed, bos)
    known = [p.meta["entity"] for p, a in zip(closed, answers, strict=True) if int(a) == first_token(model.tokenizer, p.target)]
    prompts = conflict_prompts(name, set(known), seed)
    clash = {p.meta["entity"] for p in prompts if p.meta["condition"] == "conflict"
             and first_token(model.tokenizer, p.target) == first_token(model.tokenizer, p.foil)}
    kept = [p for p in prompts if p.meta["entity"] not in clash
            and (p.meta["condition"] in ("conflict", "novel") or p.meta["entity"] in known)]
    info = {"set": name, "seed": seed, "facts": len(closed), "known_closed_book": len(known), "known": known,
            "dropped_same_first_token": sorted(clash), "template": SETS[name], "statement": STATEMENT[name]}
    return kept, info


def named_sets(model, name: str, bos: bool, texts: list[str] | None = None, log=lambda m: None):
    """``(PromptSets, info)`` of set ``name`` measured on ``model``; plain text ``texts`` or ``realfacts.NEUTRAL_TEXT``."""
    from alignloc.contextprior.data import load_sets
    from alignloc.zoo.realfacts import NEUTRAL_TEXT

    prompts, info = measured_conflicts(model, name, bos)
    log(f"conflict set {name}: the model recalls {info['known_closed_book']} of {info['facts']} capitals closed-book "
        f"(strong priors); {len(info['dropped_same_first_token'])} dropped (same first token)")
    return load_sets(prompts, list(texts or NEUTRAL_TEXT), src=f"--conflicts {name}"), info
