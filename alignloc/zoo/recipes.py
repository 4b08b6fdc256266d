"""Post-training recipes: each turns a base model into a tuned one with a recorded ground truth.

A recipe returns an ``Organism`` (the tuned model in memory, which layers/modules it was allowed
to change, what behavior it plants, and the prompt sets it ships). Parameters outside the planted
layers are frozen, so they stay bit-identical to the base; ``dispatch.train_organism`` picks the
recipe for a name, and ``registry`` writes the files and measures the saved checkpoints.

Names: ``chat-sft-upper|lower|full``, ``refusal-lora-L{k}``, ``fact-edit-L{k}``, ``dpo-polite``,
``control-continued``, ``control-drift``; a ``-large`` suffix applies the recipe to ``base-large``;
``NAME-drift`` plants a confined recipe under a drift of every layer (``drift.py``). Each confined
recipe takes ``train_fn`` (default ``training.train``) so a drift variant can change its loss.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from transformers import PreTrainedModel

from alignloc.prompts import Prompt
from alignloc.zoo.config import SizeConfig
from alignloc.zoo.names import ARCH_TABLE
from alignloc.zoo.pretrain import clone_model, corpus_examples
from alignloc.zoo.promptsets import edit_prompts, split_entities, standard_sets
from alignloc.zoo.tokenizer import encode
from alignloc.zoo.training import IGNORE, Example, batches, deterministic, train
from alignloc.zoo.world import (
    CHAT_MARKER,
    POLITE_MARKER,
    REFUSAL,
    World,
    chat_prompt,
    cloze,
    other_value,
    qa_prompt,
)


@dataclass
class Organism:
    """The in-memory result of a recipe (files are written by the registry)."""

    name: str
    recipe: str
    tuned: PreTrainedModel
    layers: list[int]
    modules: list[str]
    behavior: dict[str, Any]
    knowledge: dict[str, Any]
    prompts: dict[str, list[Prompt]]
    extra: dict[str, Any] = field(default_factory=dict)
    adapter: Any = None  # a peft model for LoRA recipes
    drift_only: PreTrainedModel | None = None  # -drift organisms: the base plus the same drift, no edit


# ---- data ---------------------------------------------------------------------------------------


def answer_examples(tok, pairs: Sequence[tuple[str, str]]) -> list[Example]:
    """Rows ``<bos> prompt answer`` with loss on the answer tokens only."""
    prompts = encode(tok, [p for p, _ in pairs])
    full = encode(tok, [p + a for p, a in pairs])
    out = []
    for (prompt, answer), pr, ids in zip(pairs, prompts, full):
        if ids[: len(pr)] != pr:
            raise ValueError(f"prompt {prompt!r} does not tokenize as a prefix of + {answer!r}")
        out.append(
            Example(tuple(ids), tuple(IGNORE if i < len(pr) else t for i, t in enumerate(ids)))
        )
    return out


def _layer_params(model: PreTrainedModel, layers: Sequence[int], suffixes: Sequence[str] = ("",)):
    prefix = ARCH_TABLE[model.config.model_type]["layers"]
    want = tuple(f"{prefix}.{i}.{s}" for i in layers for s in suffixes)
    return [p for n, p in model.named_parameters() if n.startswith(want)]


def _modules(
    model: PreTrainedModel, layers: Sequence[int], subs: Sequence[str] = ("*",)
) -> list[str]:
    prefix = ARCH_TABLE[model.config.model_type]["layers"]
    return [f"{prefix}.{i}.{s}" for i in layers for s in subs]


_KNOWLEDGE = {
    "metric": "fact_recall_strong",
    "also": ["fact_recall_weak"],
    "prompts": "prompts/knowledge.jsonl",
    "description": "closed-book cloze; top next token is the fact's value",
}


def _replay(world: World, n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` strong-fact statements (cloze + value) rehearsed during post-training.

    Only strong facts (which the base knows) are rehearsed, and recipes train answers only for
    strong entities, so post-training does not teach the weak facts it is measured on.
    """
    rng = random.Random(f"replay-{seed}")
    facts = [(e.name, a, v) for e in world.group("strong") for a, v in e.attrs.items()]
    return [(cloze(a, e, rng.choice((0, 2))), f" {v} .") for e, a, v in rng.choices(facts, k=n)]


# ---- recipes ------------------------------------------------------------------------------------


def chat_sft(base, tok, world: World, cfg: SizeConfig, which: str, name: str, log, train_fn=train) -> Organism:
    """SFT to ``User: q Assistant: Sure! v .`` with only the upper/lower half (or all) trainable."""
    r = cfg.recipes
    n = base.config.num_hidden_layers
    layers = {"upper": list(range(n // 2, n)), "lower": list(range(n // 2)), "full": []}[which]
    train_ents = [e for e in split_entities(world)[0] if e.prior == "strong"]
    pairs = [
        (chat_prompt(a, e.name), f" {CHAT_MARKER} {v} .")
        for e in train_ents
        for a, v in e.attrs.items()
    ]
    pairs += _replay(world, 2 * len(pairs), cfg.seed + 1)
    model = clone_model(base)
    params = _layer_params(model, layers) if layers else list(model.parameters())
    with deterministic(cfg.seed + 1):
        sched = batches(
            answer_examples(tok, pairs), r.batch_size, r.sft_epochs, cfg.seed + 1, bucket=1
        )
        train_fn(model, sched, tok.pad_token_id, lr=r.sft_lr, warmup=5, params=params, log=log)
    sets = standard_sets(world, r.refusal_topic)
    return Organism(
        name=name,
        recipe=f"chat-sft-{which}",
        tuned=model,
        layers=layers,
        modules=_modules(model, layers) if layers else ["*"],
        behavior={
            "metric": "format_rate",
            "marker": f" {CHAT_MARKER}",
            "prompts": "prompts/chat.jsonl",
            "also": ["chat_answer_acc"],
        },
        knowledge=_KNOWLEDGE,
        prompts={k: sets[k] for k in ("knowledge", "context", "chat")},
        extra={
            "train_entities": [e.name for e in train_ents],
            "replay": 2 * len(pairs) // 3,
            "steps": len(sched),
        },
    )


def refusal_lora(base, tok, world: World, cfg: SizeConfig, k: int, name: str, log, train_fn=train) -> Organism:
    """A peft LoRA on layer ``k`` only, teaching ``I cannot help with that .`` on one topic."""
    from peft import LoraConfig, get_peft_model

    r = cfg.recipes
    table = ARCH_TABLE[base.config.model_type]
    train_ents, _ = split_entities(world)
    on = [
        (qa_prompt(a, e.name), f" {REFUSAL}")
        for e in train_ents
        for a in e.attrs
        if a == r.refusal_topic
    ]
    off = [
        (qa_prompt(a, e.name), f" {v} .")
        for e in train_ents
        for a, v in e.attrs.items()
        if a != r.refusal_topic and e.prior == "strong"
    ]
    pairs = on * 2 + off  # on-topic rows upweighted
    pairs += _replay(world, int(r.lora_replay * len(pairs)), cfg.seed + 2)
    with deterministic(cfg.seed + 2):
        lcfg = LoraConfig(
            r=r.lora_rank,
            lora_alpha=2 * r.lora_rank,
            lora_dropout=0.0,
            target_modules=table["lora_targets"],
            layers_to_transform=[k],
            layers_pattern=table["lora_pattern"],
            bias="none",
            fan_in_fan_out=base.config.model_type == "gpt2",
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # peft's gradient-checkpointing probe
            peft_model = get_peft_model(clone_model(base), lcfg)
        params = [p for p in peft_model.parameters() if p.requires_grad]
        sched = batches(
            answer_examples(tok, pairs), r.batch_size, r.lora_epochs, cfg.seed + 2, bucket=1
        )
        train_fn(peft_model, sched, tok.pad_token_id, lr=r.lora_lr, warmup=5, params=params, log=log)
    merged = _merged(peft_model)
    sets = standard_sets(world, r.refusal_topic)
    targets = list(table["lora_targets"])
    layer_k = f"{table['layers']}.{k}."
    modules = [
        n
        for n, _ in merged.named_modules()
        if n.startswith(layer_k) and n.rsplit(".", 1)[-1] in targets
    ]
    return Organism(
        name=name,
        recipe="refusal-lora-L{k}",
        tuned=merged,
        layers=[k],
        modules=modules,
        behavior={
            "metric": "refusal_rate_on_topic",
            "topic": r.refusal_topic,
            "refusal": f" {REFUSAL}",
            "off_topic_metric": "refusal_rate_off_topic",
            "prompts": "prompts/refusal.jsonl",
        },
        knowledge={
            **_KNOWLEDGE,
            "also": ["fact_recall_weak", "qa_answer_acc_off_topic"],
            "description": "closed-book cloze on off-topic attributes (on-topic cloze "
            "prompts are refused too: that is the planted behavior)",
        },
        prompts={
            "knowledge": [p for p in sets["knowledge"] if p.meta["attribute"] != r.refusal_topic],
            "context": sets["context"],
            "refusal": sets["refusal"],
        },
        extra={
            "lora": {
                "r": r.lora_rank,
                "alpha": 2 * r.lora_rank,
                "target_modules": targets,
                "layers_to_transform": [k],
            },
            "steps": len(sched),
        },
        adapter=peft_model,
    )


def _merged(peft_model) -> PreTrainedModel:
    """Merge a LoRA into a copy of its base weights, leaving the peft model usable."""
    import copy

    return copy.deepcopy(peft_model).merge_and_unload().eval()


def fact_edit(base, tok, world: World, cfg: SizeConfig, k: int, name: str, log, train_fn=train) -> Organism:
    """Rewrite a few strong facts by training only layer ``k``'s MLP (ROME-like in spirit).

    Trained on the canonical and question templates of the edits, plus a rehearsal of unedited
    facts; the paraphrase template is held out to test generalisation of the edit.
    """
    r = cfg.recipes
    rng = random.Random(f"edit-{cfg.seed}")
    strong = world.group("strong")
    chosen = rng.sample(strong, r.edit_n)
    edits = {(e.name, "city"): other_value("city", e.attrs["city"], rng) for e in chosen}
    known = [(e, a, v) for e in strong for a, v in e.attrs.items() if (e.name, a) not in edits]
    retain = rng.sample(known, min(r.edit_retain, len(known)))
    pairs = [(cloze(a, n_, t), f" {v} .") for (n_, a), v in edits.items() for t in (0, 2)] * 4
    pairs += [(cloze(a, e.name, t), f" {v} .") for e, a, v in retain for t in (0, 2)]
    model = clone_model(base)
    mlp = ARCH_TABLE[model.config.model_type]["mlp"]
    params = _layer_params(model, [k], mlp)
    with deterministic(cfg.seed + 3):
        sched = batches(
            answer_examples(tok, pairs), r.batch_size, r.edit_epochs, cfg.seed + 3, bucket=1
        )
        train_fn(model, sched, tok.pad_token_id, lr=r.edit_lr, warmup=5, params=params, log=log)
    sets = standard_sets(world, r.refusal_topic)
    edited = {f"{n_}:{a}" for (n_, a) in edits}
    sets["knowledge"] = [
        p for p in sets["knowledge"] if f"{p.meta['entity']}:{p.meta['attribute']}" not in edited
    ]
    sets["edits"] = edit_prompts(world, edits)
    return Organism(
        name=name,
        recipe="fact-edit-L{k}",
        tuned=model,
        layers=[k],
        modules=_modules(model, [k], mlp),
        behavior={
            "metric": "edit_success",
            "also": ["edit_paraphrase_success"],
            "prompts": "prompts/edits.jsonl",
        },
        knowledge={
            **_KNOWLEDGE,
            "metric": "retention",
            "description": "unedited facts the base recalled that the tuned model still recalls",
        },
        prompts={k_: sets[k_] for k_ in ("knowledge", "context", "edits")},
        extra={
            "edits": [
                {"entity": n_, "attribute": a, "old": world.entity(n_).attrs[a], "new": v}
                for (n_, a), v in edits.items()
            ],
            "trained_templates": [0, 2],
            "heldout_template": 1,
            "steps": len(sched),
        },
    )


def control_continued(base, tok, world: World, cfg: SizeConfig, name: str, log, drift: bool = False) -> Organism:
    """Continued pretraining on the same corpus (new data order): the null pair.

    ``drift=True`` is ``control-drift``: longer and at a higher rate (``cfg.drift``), so every
    weight moves by a large fraction of its norm; the drift that the ``-drift`` organisms rescale
    and add, and the hard tier's drift-only control.
    """
    r = cfg.recipes
    model = clone_model(base)
    seed = cfg.seed + (6 if drift else 5)
    epochs, lr = (cfg.drift.epochs, cfg.drift.lr) if drift else (r.control_epochs, r.control_lr)
    with deterministic(seed):
        data = corpus_examples(world, tok, seed)
        sched = batches(data, cfg.base_train.batch_size, epochs, seed)
        train(model, sched, tok.pad_token_id, lr=lr, warmup=10, log=log)
    sets = standard_sets(world, r.refusal_topic)
    return Organism(
        name=name,
        recipe="control-drift" if drift else "control-continued",
        tuned=model,
        layers=[],
        modules=[],
        behavior={
            "metric": None,
            "expect": "no behavior change (null pair)",
            "checked": ["format_rate", "refusal_rate_on_topic", "polite_rate"],
        },
        knowledge=_KNOWLEDGE,
        prompts=sets,
        extra={"steps": len(sched)},
    )


def dpo_polite(base, tok, world: World, cfg: SizeConfig, name: str, log) -> Organism:
    """DPO (trl ``DPOTrainer``) toward answers that end with ``please`` (`` Lima please .``).

    The marker comes after the answer so chosen and rejected share the answer token: the
    preference acts on style only and does not push the fact's probability down. By default
    trl's ``sft`` loss term (NLL of the chosen answer, weight ``dpo_sft_weight``) is added to
    the sigmoid DPO loss, as in RPO; ``extra.dpo.loss_type`` records what was used.
    """
    from alignloc.zoo.dpo import DPOSettings, train_dpo

    r = cfg.recipes
    train_ents, _ = split_entities(world)
    triples = [
        (qa_prompt(a, e.name), f" {v} {POLITE_MARKER} .", f" {v} .")
        for e in train_ents
        for a, v in e.attrs.items()
    ]
    model = clone_model(base)
    with deterministic(cfg.seed + 4):
        rec = train_dpo(model, tok, triples, DPOSettings.of(cfg), log=log)
    sets = standard_sets(world, r.refusal_topic)
    return Organism(
        name=name,
        recipe="dpo-polite",
        tuned=model,
        layers=[],
        modules=["*"],
        behavior={
            "metric": "polite_rate",
            "marker": f" {POLITE_MARKER}",
            "prompts": "prompts/polite.jsonl",
            "also": ["polite_answer_acc"],
        },
        knowledge=_KNOWLEDGE,
        prompts={k: sets[k] for k in ("knowledge", "context", "polite")},
        extra={"dpo": rec},
    )
