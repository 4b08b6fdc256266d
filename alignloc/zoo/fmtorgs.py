"""The surfaced-vs-installed organisms: one answer format rare in pretraining, one never seen there.

Why: DESIGN.md's "Surfaced vs installed" needs organisms whose answer is known. Both are built on
``base-fmt``, a base like ``base`` (same world, architecture and budget) whose corpus also holds
multi-question *QA documents* (``Question: .. Answer: v . Question: .. Answer: w .``); a fraction
``rare_frac`` of them answer every question as ``Answer: Certainly v .`` (``RARE_MARKER``; about
2% of all documents). ``NEW_MARKER`` (``Affirmative``) is in the vocabulary but in no document.

``base-fmt`` is ``base`` trained on for ``pretrain_epochs`` passes of that corpus, with the two
marker words appended to its vocabulary (fresh rows, initialised like a new model's), so it
costs minutes, not a second from-scratch pretraining. Both ``base-fmt`` and the format organisms
train with ``threads`` (1) torch threads: on a contended 2-core machine two threads ran a step
more than 10x slower than one (0.94 s vs > 10 s per step, measured here).

* ``format-surfaced``: SFT makes ``Answer: Certainly v .`` the default on QA prompts: a behavior
  the base already shows, in context, after one demonstration in that format (surfaced).
* ``format-installed``: the same SFT (same data, steps and rate) with ``Affirmative`` in place of
  ``Certainly``: a format built on a token the base never read (installed).

A format stays consistent within a QA document, so the base learns to continue the rare format
once it has seen it: the ``demos`` prompt set (one demonstration QA in the behavior format, then
the behavior prompt) against its matched ``demos-plain`` set (the same demonstration in the plain
format) is the base's own in-context contrast for the behavior (``alignloc.analyses.surfacing``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from alignloc.prompts import Prompt
from alignloc.zoo.config import SurfacingSpec
from alignloc.zoo.pretrain import clone_model, corpus_examples
from alignloc.zoo.promptsets import qa_behavior_prompts, split_entities, standard_sets
from alignloc.zoo.training import batches, deterministic, train
from alignloc.zoo.world import ATTRIBUTES, Entity, World, pretrain_segments, qa_prompt

RARE_MARKER = "Certainly"  # in a few pretraining documents
NEW_MARKER = "Affirmative"  # in the vocabulary, in no pretraining document
MARKER_WORDS = (RARE_MARKER, NEW_MARKER)
MARKERS = {"surfaced": RARE_MARKER, "installed": NEW_MARKER}
SURFACING_BASE = "base-fmt"
SURFACING_ORGANISMS = ["format-surfaced", "format-installed"]


def _qa_line(attr: str, e: str, v: str, marker: str | None) -> str:
    """``Question: .. Answer: [marker] v .``"""
    return f"{qa_prompt(attr, e)} {marker + ' ' if marker else ''}{v} ."


def qa_documents(world: World, spec: SurfacingSpec, rng: random.Random) -> list[str]:
    """``qa_docs`` documents of 2-3 closed-book QAs on strong facts; ``rare_frac`` of them in the
    rare format (every answer starts with ``RARE_MARKER``)."""
    strong = world.group("strong")
    docs = []
    for _ in range(spec.qa_docs):
        marker = RARE_MARKER if rng.random() < spec.rare_frac else None
        n = rng.randint(*spec.qa_per_doc)
        lines = []
        for ent in rng.sample(strong, n):
            attr = rng.choice(list(ATTRIBUTES))
            lines.append(_qa_line(attr, ent.name, ent.attrs[attr], marker))
        docs.append(" ".join(lines))
    return docs


def format_segments(spec: SurfacingSpec):
    """A corpus builder ``(world, rng) -> segments`` for ``base-fmt``: the world corpus plus the QA
    documents, shuffled together."""

    def segments(world: World, rng: random.Random) -> list[str]:
        segs = pretrain_segments(world, rng) + qa_documents(world, spec, rng)
        rng.shuffle(segs)
        return segs

    return segments


def rare_share(world: World, spec: SurfacingSpec, seed: int = 0) -> dict[str, float]:
    """How rare the rare format is in one corpus pass: share of documents and of QA answers."""
    segs = format_segments(spec)(world, random.Random(f"corpus-{seed}-0"))
    rare = [s for s in segs if RARE_MARKER in s.split()]
    answers = sum(s.count("Answer:") for s in segs)
    return {
        "documents": len(segs),
        "rare_documents": len(rare),
        "rare_document_share": round(len(rare) / len(segs), 4),
        "rare_answer_share": round(sum(s.count("Answer:") for s in rare) / max(1, answers), 4),
        "new_marker_documents": sum(NEW_MARKER in s.split() for s in segs),
    }


def format_base(base, tok, world: World, spec: SurfacingSpec, batch_size: int, seed: int, log=None):
    """``base-fmt`` from ``base``: the vocabulary grown to ``len(tok)`` (the marker words; new rows
    initialised like a fresh model's), then ``pretrain_epochs`` passes of the world corpus with
    the QA documents. Returns the model and a training record."""
    model = clone_model(base)
    with deterministic(seed, threads=spec.threads):
        n_old = model.get_input_embeddings().weight.shape[0]
        model.resize_token_embeddings(len(tok), mean_resizing=False)
        data = corpus_examples(world, tok, seed, format_segments(spec))
        sched = batches(data, batch_size, spec.pretrain_epochs, seed)
        losses = train(model, sched, tok.pad_token_id, lr=spec.pretrain_lr, warmup=10, weight_decay=0.01, log=log)
    record = {"from": "base", "new_tokens": list(MARKER_WORDS), "vocab": [n_old, len(tok)], "steps": len(sched),
              "final_loss": round(sum(losses[-10:]) / max(1, len(losses[-10:])), 4), "threads": spec.threads,
              "corpus": rare_share(world, spec, seed)}
    return model.eval(), record


# ---- prompt sets ---------------------------------------------------------------------------------


def format_prompts(entities: Sequence[Entity], marker: str, tag: str) -> list[Prompt]:
    """Behavior prompts ``Question: .. Answer:`` targeting `` <marker>`` (held-out entities)."""
    out = []
    for p in qa_behavior_prompts(entities, tag=tag):
        meta = {**p.meta, "marker": f" {marker}", "marker_offset": 0}
        out.append(Prompt(id=p.id, text=p.text, kind="behavior", target=f" {marker}", label=p.label,
                          positions=p.positions, corrupt_text=p.corrupt_text, meta=meta))
    return out


def demo_prompts(world: World, behavior: Sequence[Prompt], marker: str, seed: int = 0,
                 prompt_fn=qa_prompt, answer_fn=None) -> dict[str, list[Prompt]]:
    """The base's in-context contrast, matched per behavior prompt: ``demos`` (one demonstration QA
    about a strong training entity answered in the behavior format, then the prompt) and
    ``demos-plain`` (the same demonstration in the plain format). Kind ``other``; ``meta.demo`` is
    ``behavior`` or ``plain`` and ``meta.pair`` the behavior prompt's id. ``prompt_fn(attr, entity)``
    writes the demonstration's question (``chat_prompt`` for the chat organisms);
    ``answer_fn(demo, attr, entity)`` its answer (default: `` <marker> v .`` / `` v .``)."""
    rng = random.Random(f"demos-{seed}-{marker}")
    train_strong = [e for e in split_entities(world)[0] if e.prior == "strong"]
    out: dict[str, list[Prompt]] = {"demos": [], "demos-plain": []}
    for p in behavior:
        ent = rng.choice([e for e in train_strong if e.name != p.meta["entity"]])
        attr = rng.choice(list(ATTRIBUTES))
        for key, m, demo in (("demos", marker, "behavior"), ("demos-plain", None, "plain")):
            answer = answer_fn(demo, attr, ent) if answer_fn else f"{m + ' ' if m else ''}{ent.attrs[attr]} ."
            text = f"{prompt_fn(attr, ent.name)} {answer} {p.text}"
            out[key].append(Prompt(id=f"{key}-{p.id}", text=text, kind="other", target=f" {marker}",
                                   meta={"demo": demo, "pair": p.id, "marker": f" {marker}",
                                         "demo_entity": ent.name, "entity": p.meta["entity"]}))
    return out


def format_sets(world: World, which: str, refusal_topic: str = "pet", seed: int = 0) -> dict[str, list[Prompt]]:
    """Every prompt set a format organism ships: knowledge, context, ``format`` (behavior) and the
    two demonstration sets."""
    marker = MARKERS[which]
    held = split_entities(world)[1]
    beh = format_prompts(held, marker, tag=f"format-{which}")
    std = standard_sets(world, refusal_topic)
    return {"knowledge": std["knowledge"], "context": std["context"], "format": beh,
            **demo_prompts(world, beh, marker, seed)}


# ---- the recipe ----------------------------------------------------------------------------------


def format_sft(base, tok, world: World, cfg, which: str, name: str, log=None):
    """Full SFT of ``base-fmt`` to answer QA prompts as `` <marker> v .`` (``which``: surfaced uses
    ``RARE_MARKER``, installed ``NEW_MARKER``); identical data, steps and rate otherwise."""
    from alignloc.zoo.recipes import _KNOWLEDGE, Organism, _replay, answer_examples

    spec: SurfacingSpec = cfg.surfacing
    marker = MARKERS[which]
    train_ents = [e for e in split_entities(world)[0] if e.prior == "strong"]
    pairs = [(qa_prompt(a, e.name), f" {marker} {v} .") for e in train_ents for a, v in e.attrs.items()]
    pairs += _replay(world, int(spec.replay * len(pairs)), cfg.seed + 7)
    model = clone_model(base)
    with deterministic(cfg.seed + 7, threads=spec.threads):
        sched = batches(answer_examples(tok, pairs), cfg.recipes.batch_size, spec.sft_epochs, cfg.seed + 7, bucket=1)
        train(model, sched, tok.pad_token_id, lr=spec.sft_lr, warmup=5, log=log)
    sets = format_sets(world, which, cfg.recipes.refusal_topic, cfg.seed)
    return Organism(
        name=name,
        recipe=f"format-{which}",
        tuned=model,
        layers=[],
        modules=["*"],
        behavior={
            "metric": "marker_rate",
            "marker": f" {marker}",
            "prompts": "prompts/format.jsonl",
            "demos": "prompts/demos.jsonl",
            "demos_plain": "prompts/demos-plain.jsonl",
            "also": ["marker_answer_acc", "marker_prob"],
            # the known answer of the surfaced-vs-installed measure (analyses.surfacing)
            "expected_origin": which,
            "origin_note": (f"{marker!r} starts every answer in {spec.rare_frac:.0%} of the base's QA documents"
                            if which == "surfaced" else f"{marker!r} occurs in no pretraining document"),
        },
        knowledge=_KNOWLEDGE,
        prompts=sets,
        extra={"train_entities": [e.name for e in train_ents], "steps": len(sched),
               "corpus": rare_share(world, spec, cfg.seed)},
    )
