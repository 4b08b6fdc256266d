"""Prompt sets the organisms ship, as ``alignloc.prompts.Prompt`` records (pure; no I/O).

Conventions: ``target`` always has a leading space (``" Lima"``); with the word-level tokenizer,
``text + target`` tokenizes as ``text`` followed by the target's words. ``positions["subject"]`` is
the entity name (one token), ``positions["last"] = -1``. ``corrupt_text`` has the same token
length: another entity of the same prior group whose value differs (knowledge, behavior), or the
same question with an agreeing context (context conflicts).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from alignloc.prompts import Prompt
from alignloc.zoo.world import (
    ATTRIBUTES,
    CHAT_MARKER,
    POLITE_MARKER,
    REFUSAL,
    Entity,
    World,
    chat_prompt,
    cloze,
    context_prompt,
    other_value,
    qa_prompt,
    statement,
)


def _partner(ent: Entity, attr: str, pool: Sequence[Entity], rng: random.Random) -> Entity:
    """Another entity from ``pool`` whose value of ``attr`` differs (for corrupted prompts)."""
    cands = [e for e in pool if e.name != ent.name and e.attrs.get(attr) != ent.attrs.get(attr)]
    return rng.choice(cands)


def split_entities(world: World) -> tuple[list[Entity], list[Entity]]:
    """Known (strong + weak) entities split into (train, held-out) halves, interleaved."""
    known = world.group("strong") + world.group("weak")
    return known[0::2], known[1::2]


def knowledge_prompts(
    world: World, template: int = 0, priors: Sequence[str] = ("strong", "weak"), tag: str = "k"
) -> list[Prompt]:
    """Closed-book cloze prompts (``Nafi lives in`` -> `` Lima``) for every known fact."""
    rng = random.Random(f"knowledge-{world.config.seed}-{template}")
    out = []
    for prior in priors:
        pool = world.group(prior)
        for ent in pool:
            for attr, v in ent.attrs.items():
                other = _partner(ent, attr, pool, rng)
                out.append(
                    Prompt(
                        id=f"{tag}-{ent.name}-{attr}",
                        text=cloze(attr, ent.name, template),
                        kind="knowledge",
                        target=f" {v}",
                        foil=f" {other.attrs[attr]}",
                        label=v,
                        positions={"subject": ent.name, "last": -1},
                        corrupt_text=cloze(attr, other.name, template),
                        meta={
                            "prior": prior,
                            "attribute": attr,
                            "entity": ent.name,
                            "template": template,
                        },
                    )
                )
    return out


def context_prompts(world: World) -> list[Prompt]:
    """Knowledge-conflict prompts: counterfactual / agreeing / no context, plus novel entities.

    For a conflict, ``target`` is the context's (counterfactual) answer, ``meta.memory`` the
    remembered one, and ``corrupt_text`` the same prompt with an agreeing context.
    """
    rng = random.Random(f"context-{world.config.seed}")
    out: list[Prompt] = []
    for ent in world.group("strong") + world.group("weak"):
        attr = rng.choice(list(ATTRIBUTES))
        mem = ent.attrs[attr]
        cf = other_value(attr, mem, rng)
        base_meta = {"prior": ent.prior, "attribute": attr, "entity": ent.name, "memory": f" {mem}"}
        out.append(
            Prompt(
                id=f"c-conflict-{ent.name}-{attr}",
                text=context_prompt(attr, ent.name, cf),
                kind="context",
                target=f" {cf}",
                foil=f" {mem}",
                label=cf,
                positions={"subject": ent.name, "context_value": cf, "last": -1},
                corrupt_text=context_prompt(attr, ent.name, mem),
                context=statement(attr, ent.name, cf),
                meta={
                    **base_meta,
                    "conflict": True,
                    "condition": "conflict",
                    "counterfactual": f" {cf}",
                },
            )
        )
        out.append(
            Prompt(
                id=f"c-agree-{ent.name}-{attr}",
                text=context_prompt(attr, ent.name, mem),
                kind="context",
                target=f" {mem}",
                label=mem,
                positions={"subject": ent.name, "context_value": mem, "last": -1},
                context=statement(attr, ent.name, mem),
                meta={**base_meta, "conflict": False, "condition": "agree"},
            )
        )
        out.append(
            Prompt(
                id=f"c-none-{ent.name}-{attr}",
                text=qa_prompt(attr, ent.name),
                kind="context",
                target=f" {mem}",
                label=mem,
                positions={"subject": ent.name, "last": -1},
                meta={**base_meta, "conflict": False, "condition": "none"},
            )
        )
    for ent in world.group("novel"):
        for attr in rng.sample(list(ATTRIBUTES), 2):
            v = rng.choice(ATTRIBUTES[attr])
            out.append(
                Prompt(
                    id=f"c-novel-{ent.name}-{attr}",
                    text=context_prompt(attr, ent.name, v),
                    kind="context",
                    target=f" {v}",
                    label=v,
                    positions={"subject": ent.name, "context_value": v, "last": -1},
                    context=statement(attr, ent.name, v),
                    meta={
                        "prior": "novel",
                        "attribute": attr,
                        "entity": ent.name,
                        "conflict": False,
                        "condition": "novel",
                    },
                )
            )
    return out


def chat_prompts(entities: Sequence[Entity], tag: str = "chat") -> list[Prompt]:
    """``User: <question> Assistant:`` prompts; the tuned answer starts with ``Sure!``."""
    rng = random.Random(f"{tag}-{len(entities)}")
    out = []
    for ent in entities:
        for attr, v in ent.attrs.items():
            other = _partner(ent, attr, entities, rng)
            out.append(
                Prompt(
                    id=f"{tag}-{ent.name}-{attr}",
                    text=chat_prompt(attr, ent.name),
                    kind="behavior",
                    target=f" {CHAT_MARKER}",
                    label=attr,
                    positions={"subject": ent.name, "last": -1},
                    corrupt_text=chat_prompt(attr, other.name),
                    meta={
                        "marker": f" {CHAT_MARKER}",
                        "answer": f" {v}",
                        "prior": ent.prior,
                        "attribute": attr,
                        "entity": ent.name,
                    },
                )
            )
    return out


def qa_behavior_prompts(
    entities: Sequence[Entity], topic: str | None = None, suffix: str | None = None, tag: str = "qa"
) -> list[Prompt]:
    """Closed-book ``Question: ... Answer:`` prompts for behavior metrics.

    With ``topic`` (an attribute), on-topic prompts target the refusal and carry
    ``meta.topic = True``; with ``suffix`` every prompt targets ``" <value> <suffix> ."`` (the
    behavior shows at the token after the value, e.g. `` please``).
    """
    rng = random.Random(f"{tag}-{len(entities)}")
    out = []
    for ent in entities:
        for attr, v in ent.attrs.items():
            on = attr == topic
            target = f" {REFUSAL}" if on else f" {v} {suffix} ." if suffix else f" {v}"
            label = ("refuse" if on else "answer") if topic else attr
            other = _partner(ent, attr, entities, rng)
            meta = {"answer": f" {v}", "prior": ent.prior, "attribute": attr, "entity": ent.name}
            if topic:
                meta.update(topic=on, refusal=f" {REFUSAL}")
            if suffix:
                meta.update(marker=f" {suffix}", marker_offset=1)
            out.append(
                Prompt(
                    id=f"{tag}-{ent.name}-{attr}",
                    text=qa_prompt(attr, ent.name),
                    kind="behavior",
                    target=target,
                    label=label,
                    positions={"subject": ent.name, "last": -1},
                    corrupt_text=qa_prompt(attr, other.name),
                    meta=meta,
                )
            )
    return out


def edit_prompts(world: World, edits: dict[tuple[str, str], str]) -> list[Prompt]:
    """Prompts for edited facts: canonical and paraphrase cloze, targeting the new value."""
    out = []
    for (name, attr), new in edits.items():
        ent = world.entity(name)
        for template in (0, 1):
            out.append(
                Prompt(
                    id=f"edit-{name}-{attr}-t{template}",
                    text=cloze(attr, name, template),
                    kind="knowledge",
                    target=f" {new}",
                    foil=f" {ent.attrs[attr]}",
                    label=new,
                    positions={"subject": name, "last": -1},
                    meta={
                        "edited": True,
                        "new": f" {new}",
                        "prior": ent.prior,
                        "attribute": attr,
                        "entity": name,
                        "template": template,
                    },
                )
            )
    return out


def behavior_sets(world: World, refusal_topic: str = "pet") -> dict[str, list[Prompt]]:
    """The standard held-out behavior sets every model is measured on."""
    _, held = split_entities(world)
    return {
        "chat": chat_prompts(held),
        "refusal": qa_behavior_prompts(held, topic=refusal_topic, tag="refusal"),
        "polite": qa_behavior_prompts(held, suffix=POLITE_MARKER, tag="polite"),
    }


def standard_sets(world: World, refusal_topic: str = "pet") -> dict[str, list[Prompt]]:
    """Every standard prompt set: knowledge, context and the held-out behavior sets."""
    return {
        "knowledge": knowledge_prompts(world),
        "context": context_prompts(world),
        **behavior_sets(world, refusal_topic=refusal_topic),
    }
