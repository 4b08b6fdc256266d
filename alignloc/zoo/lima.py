"""``chat-lima``: chat tuning that keeps the base's knowledge, as real chat models do.

LIMA-style (Zhou et al. 2023): a small curated chat set (``LimaSpec.n_chat`` answers in the
``User: q Assistant: Sure! v .`` format, balanced over attributes, strong-prior train entities
only) instead of ``chat-sft-full``'s every-fact set, trained on all layers like ``chat-sft-full``;
and, each step, a KL term to the frozen base on a batch of its own pretraining text
(``training.kl_to_reference``), the knowledge-keeping term of KL-regularized post-training. It
is the contrast to ``chat-sft-full``, which plants the same format but forgets about a third of
the facts the base recalled (its retention is recorded in ``ground_truth.json``, as here).
"""

from __future__ import annotations

import random

from alignloc.zoo.config import SizeConfig
from alignloc.zoo.pretrain import clone_model, corpus_examples
from alignloc.zoo.promptsets import split_entities, standard_sets
from alignloc.zoo.recipes import _KNOWLEDGE, Organism, answer_examples
from alignloc.zoo.training import batches, deterministic, kl_to_reference, train
from alignloc.zoo.world import CHAT_MARKER, World, chat_prompt

# one thread: three forward passes a step on rows of ~15 tokens gain nothing from a second thread, and on
# a shared machine an idle OpenMP thread spins (a 2-thread build ran ~10x slower); recorded in ``extra``
THREADS = 1


def curated_chat(world: World, n: int, seed: int) -> list[tuple[str, str, str]]:
    """``n`` chat ``(entity, prompt, answer)`` rows, attributes taken in turn, each from a
    different strong-prior train entity where possible (the curated set)."""
    rng = random.Random(f"lima-{seed}")
    ents = [e for e in split_entities(world)[0] if e.prior == "strong"]
    attrs = list(ents[0].attrs)
    rng.shuffle(ents)
    out = []
    for i in range(n):
        e, a = ents[i % len(ents)], attrs[(i + i // len(ents)) % len(attrs)]
        out.append((e.name, chat_prompt(a, e.name), f" {CHAT_MARKER} {e.attrs[a]} ."))
    return list(dict.fromkeys(out))


def format_rows(world: World, n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` chat ``(prompt, marker)`` rows on weak-prior train entities with the loss on the format marker
    only: they teach that a chat answer opens with the marker whatever the entity, without teaching any
    fact (the weak facts are what knowledge is measured on; held-out entities are never used)."""
    rng = random.Random(f"lima-format-{seed}")
    pool = [(e.name, a) for e in split_entities(world)[0] if e.prior == "weak" for a in e.attrs]
    return [(chat_prompt(a, e), f" {CHAT_MARKER}") for e, a in rng.sample(pool, min(n, len(pool)))]


def chat_lima(base, tok, world: World, cfg: SizeConfig, name: str, log=None) -> Organism:
    """The knowledge-keeping chat organism (see the module docstring); ``base`` stays unchanged."""
    spec = cfg.lima
    seed = cfg.seed + 7
    rows = curated_chat(world, spec.n_chat, seed)
    pairs = [(p, a) for _, p, a in rows] + format_rows(world, spec.format_rows, seed)
    model = clone_model(base)
    reference = clone_model(base)
    with deterministic(seed, threads=THREADS):
        sched = batches(answer_examples(tok, pairs), spec.batch_size, spec.epochs, seed, bucket=1)
        corpus = corpus_examples(world, tok, seed)
        passes = 1 + len(sched) * spec.replay_batch_size // len(corpus(0))
        replay = batches(corpus, spec.replay_batch_size, passes, seed)
        loss_fn = kl_to_reference(reference, replay, tok.pad_token_id, spec.kl_weight)
        losses = train(model, sched, tok.pad_token_id, lr=spec.lr, warmup=5, loss_fn=loss_fn, log=log)
    sets = standard_sets(world, cfg.recipes.refusal_topic)
    return Organism(
        name=name,
        recipe="chat-lima",
        tuned=model,
        layers=[],
        modules=["*"],
        behavior={"metric": "format_rate", "marker": f" {CHAT_MARKER}", "prompts": "prompts/chat.jsonl",
                  "also": ["chat_answer_acc"]},
        knowledge={**_KNOWLEDGE, "also": ["fact_recall_weak", "retention"],
                   "description": "closed-book cloze; top next token is the fact's value; retention: the share "
                   "of the base's correct facts the tuned model still recalls (goal >= 0.95)"},
        prompts={k: sets[k] for k in ("knowledge", "context", "chat")},
        extra={"threads": THREADS, "chat_examples": len(rows), "format_rows": len(pairs) - len(rows), "kl_weight": spec.kl_weight, "steps": len(sched),
               "replay_rows": len(sched) * spec.replay_batch_size, "final_loss": round(losses[-1], 4),
               "train_entities": sorted({e for e, _, _ in rows})},
    )
