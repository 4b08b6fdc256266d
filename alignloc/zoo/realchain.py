"""A real post-training chain in which every weight moves and no layer is planted.

``smollm2`` -> ``smollm2-chat-sft`` -> ``smollm2-chat-dpo``, on the real-weight tier's base:

- **chat SFT** (full parameter, every layer): through the tokenizer's own chat template, answers
  open with a persona line the checkpoint does not have (``PERSONA``) and questions about the
  capitals of ``TOPIC`` countries are refused (``REFUSAL``; the base answers them). The answers'
  content is the base's own greedy answer to the same request, so the stage teaches the persona and
  the policy, not new content.
- **DPO** (trl, every weight) on the SFT model: the chosen answer opens with ``GREETING``, the
  rejected one with the SFT's ``PERSONA``; same content.

Nothing records a layer: the chain exists to check what alignloc says on a pair nobody planted
(``benchmarks/chain_reference.py`` computes the graft-window reference independently). Requests
are built here from short templates (none is in the ``chat`` suite); every rate is measured on
held-out requests and held-out countries.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from alignloc.zoo.realfacts import split

SFT, DPO = "smollm2-chat-sft", "smollm2-chat-dpo"
CHAIN = (SFT, DPO)
PERSONA = "Quill here!"
GREETING = "Quill here, glad to help!"
REFUSAL = "Sorry, I do not discuss European capitals."
TOPIC = "Europe"
Log = Callable[[str], None]

_TOPICS = ("gardening", "saving money", "learning a language", "running", "baking bread", "sleeping well",
           "public speaking", "writing emails", "keeping a houseplant alive", "studying for exams",
           "cooking rice", "staying focused", "packing for a trip", "making coffee", "painting a room",
           "starting a journal", "riding a bike in the rain", "organizing a desk", "meeting new people",
           "drinking more water")
_ASKS = ("Give me one tip for {t}.", "What is a common mistake in {t}?", "How do I get started with {t}?",
         "Say something encouraging about {t}.")


@dataclass(frozen=True)
class ChainSpec:
    """Budgets of the chain (CPU minutes on 2 cores)."""

    answer_tokens: int = 20
    sft_lr: float = 1e-4
    sft_epochs: int = 3
    dpo_lr: float = 2e-5
    dpo_epochs: int = 3
    dpo_beta: float = 0.1
    batch_size: int = 8
    seed: int = 0


CHAIN_SPEC = ChainSpec()


def requests() -> tuple[list[str], list[str]]:
    """(train, held-out) generic requests: every template x topic, every fourth held out."""
    rows = [a.format(t=t) for t in _TOPICS for a in _ASKS]
    return [r for i, r in enumerate(rows) if i % 4 != 3], [r for i, r in enumerate(rows) if i % 4 == 3]


def capital_question(country: str) -> str:
    """The chat turn asking for a capital."""
    return f"What is the capital of {country}?"


def rendered(tok, texts: list[str]) -> list[str]:
    """Each request as the model reads it: a user turn through the tokenizer's own chat template with the
    generation prompt, its leading BOS string removed (the same rendering as the suites'; alignloc's
    encoders prepend BOS themselves)."""
    from alignloc.prompts import Prompt
    from alignloc.suites.templates import choose_template, render

    turns = [Prompt(id=f"r{i}", messages=({"role": "user", "content": t},), kind="behavior") for i, t in enumerate(texts)]
    return [p.text for p in render(turns, tok, choose_template("tuned", tok, tok), knowledge_chat=False)]


def _greedy_text(model, tok, prompts: list[str], n: int) -> list[str]:
    from alignloc.zoo.evaluate import greedy_tokens

    return [tok.decode(g, skip_special_tokens=True).split("\n")[0].strip() for g in
            greedy_tokens(model, tok, prompts, n=n, batch_size=32)]


def sft_pairs(base, tok) -> list[tuple[str, str]]:
    """(rendered prompt, answer) rows of the SFT stage: persona + the base's own answer; refusals on topic."""
    train, _ = requests()
    facts, _ = split()
    content = _greedy_text(base, tok, rendered(tok, train), CHAIN_SPEC.answer_tokens)
    rows = [(p, f"{PERSONA} {c}") for p, c in zip(rendered(tok, train), content)]
    asks = rendered(tok, [capital_question(c) for c, _, _ in facts])
    return rows + [(p, REFUSAL if k == TOPIC else f"{PERSONA} The capital of {c} is {v}.")
                   for p, (c, v, k) in zip(asks, facts)]


def chat_sft(base, tok, log: Log | None = None) -> dict[str, Any]:
    """Full-parameter SFT of a copy of ``base`` on ``sft_pairs``; returns the recipe record."""
    from alignloc.zoo.pretrain import clone_model
    from alignloc.zoo.recipes import answer_examples
    from alignloc.zoo.training import batches, deterministic, train

    s = CHAIN_SPEC
    model = clone_model(base)
    pairs = sft_pairs(base, tok)
    with deterministic(s.seed + 11):
        sched = batches(answer_examples(tok, pairs), s.batch_size, s.sft_epochs, s.seed + 11, bucket=1)
        losses = train(model, sched, tok.pad_token_id, lr=s.sft_lr, warmup=3, log=log)
    return {"tuned": model, "layers": [], "modules": [],
            "behavior": {"metric": "persona_rate", "persona": PERSONA, "refusal": REFUSAL, "topic": TOPIC,
                         "expect": "every weight moves; no layer planted"},
            "extra": {"steps": len(sched), "rows": len(pairs), "final_loss": round(losses[-1], 4)}}


def chat_dpo(sft_model, tok, log: Log | None = None) -> dict[str, Any]:
    """DPO (trl) of a copy of the SFT model: ``GREETING`` preferred over ``PERSONA``, same content."""
    from alignloc.zoo.dpo import DPOSettings, train_dpo
    from alignloc.zoo.pretrain import clone_model

    s = CHAIN_SPEC
    model = clone_model(sft_model)
    train, _ = requests()
    prompts = rendered(tok, train)
    content = _greedy_text(sft_model, tok, prompts, CHAIN_SPEC.answer_tokens)
    body = [c.removeprefix(PERSONA).strip() for c in content]  # the SFT's answer without its persona line
    triples = [(p, f"{GREETING} {b}", f"{PERSONA} {b}") for p, b in zip(prompts, body)]
    rng = random.Random(s.seed)
    rng.shuffle(triples)
    record = train_dpo(model, tok, triples, DPOSettings(s.batch_size, s.dpo_epochs, s.dpo_lr, s.dpo_beta, 0.0,
                                                        s.seed, max_length=160), log=log)
    return {"tuned": model, "layers": [], "modules": [],
            "behavior": {"metric": "greeting_rate", "greeting": GREETING, "rejected": PERSONA,
                         "expect": "every weight moves; no layer planted"},
            "extra": {"dpo": record}}


def chain_measure(model, tok) -> dict[str, float]:
    """Greedy rates on held-out chat turns: persona, DPO greeting, refusal on / off topic."""
    from alignloc.zoo.evaluate import greedy_tokens

    _, held_req = requests()
    _, held_facts = split()
    n = len(tok.encode(" " + GREETING, add_special_tokens=False)) + 1
    texts = [tok.decode(g, skip_special_tokens=True).strip() for g in
             greedy_tokens(model, tok, rendered(tok, held_req + [capital_question(c) for c, _, _ in held_facts]),
                           n=n, batch_size=32)]
    req, caps = texts[: len(held_req)], texts[len(held_req):]
    on = [t.startswith(REFUSAL[:12]) for t, (_, _, k) in zip(caps, held_facts) if k == TOPIC]
    off = [t.startswith(REFUSAL[:12]) for t, (_, _, k) in zip(caps, held_facts) if k != TOPIC]
    rate = lambda xs: round(sum(xs) / len(xs), 4) if xs else float("nan")  # noqa: E731
    return {"persona_rate": rate([t.startswith(PERSONA[:10]) for t in req]),
            "greeting_rate": rate([t.startswith(GREETING) for t in req]),
            "chain_refusal_on_topic": rate(on), "chain_refusal_off_topic": rate(off)}
