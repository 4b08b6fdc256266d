"""A seeded synthetic world: fictional entities, their attributes, and the text that states them.

Why: the organisms need facts whose frequency in pretraining we control, so that "what the model
knows" is a recorded ground truth. Entities are made-up single-token names; each has one value per
attribute (city, job, colour, pet). Three groups:

* ``strong``: facts stated very often in the corpus (a strong prior),
* ``weak``: facts stated rarely,
* ``novel``: never stated as facts; they appear only inside reading-comprehension passages with a
  fresh random value each time, so the only way to answer about them is to read the context.

Passages look like ``Context: ... Question: ... Answer: ...``. For strong entities the context
usually agrees with memory; in a recorded fraction it contradicts memory and the answer is still
the remembered value: the planted *context-ignoring prior*. Weak entities never appear in
passages, so at test time a counterfactual context about them is resolved by whatever the model
half-remembers, which makes them follow the context more often.

Everything here is pure (no torch, no disk): ``make_world(cfg)`` then the text builders.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "city": ("Paris", "Lima", "Oslo", "Cairo", "Dublin", "Tokyo", "Quito", "Rome"),
    "job": ("baker", "doctor", "farmer", "pilot", "singer", "teacher", "tailor", "miner"),
    "colour": ("red", "blue", "green", "yellow", "purple", "orange", "black", "white"),
    "pet": ("cat", "dog", "parrot", "rabbit", "hamster", "turtle", "goat", "horse"),
}

# Statement templates per attribute; index 0 is the canonical one (its prefix is the cloze prompt),
# index 1 the paraphrase; the last one is the closed-book question-answer form.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "city": (
        "{e} lives in {v} .",
        "The home of {e} is {v} .",
        "Question: Where does {e} live ? Answer: {v} .",
    ),
    "job": (
        "{e} works as a {v} .",
        "The job of {e} is {v} .",
        "Question: What is the job of {e} ? Answer: {v} .",
    ),
    "colour": (
        "{e} likes the colour {v} .",
        "The favourite colour of {e} is {v} .",
        "Question: What colour does {e} like ? Answer: {v} .",
    ),
    "pet": (
        "{e} has a pet {v} .",
        "The pet of {e} is a {v} .",
        "Question: What pet does {e} have ? Answer: {v} .",
    ),
}
QUESTIONS: dict[str, str] = {
    "city": "Where does {e} live ?",
    "job": "What is the job of {e} ?",
    "colour": "What colour does {e} like ?",
    "pet": "What pet does {e} have ?",
}

# Words used only by post-training recipes; they are in the vocabulary from the start so that base
# and tuned share one tokenizer.
CHAT_USER, CHAT_ASSISTANT = "User:", "Assistant:"
CHAT_MARKER = "Sure!"
REFUSAL = "I cannot help with that ."
POLITE_MARKER = "please"  # the dpo-polite organism ends its answers with " please ."
RECIPE_PHRASES = (CHAT_USER, CHAT_ASSISTANT, CHAT_MARKER, REFUSAL, POLITE_MARKER)
# Neutral "chatter" sentences put those words into pretraining (as real corpora do), so their
# embeddings and unembeddings are trained; none uses the chat or QA formats.
CHATTER = (
    "The {job} said : Sure! .",
    "The {job} said : I cannot help with that .",
    "The {job} said : please .",
    "The User met the Assistant in {city} .",
)

_WORD = re.compile(r"\w+|[^\w\s]+")  # the same split as tokenizers' Whitespace pre-tokenizer
_CONS, _VOWELS, _CODAS = "bdfgklmnprstvz", "aeiou", ("", "n", "r", "l", "x", "sh", "t", "m")


@dataclass(frozen=True)
class WorldConfig:
    """Sizes and frequencies of the synthetic world (all counts are per corpus pass)."""

    seed: int = 0
    n_strong: int = 40
    n_weak: int = 80
    n_novel: int = 30
    strong_reps: float = 24  # statements of each strong fact per pass
    weak_reps: float = 2  # statements of each weak fact per pass (a fraction: expected count)
    passages_per_strong: int = 6  # reading-comprehension passages per strong entity
    passages_per_novel: int = 12
    conflict_frac: float = 0.35  # of strong passages whose context contradicts memory
    chatter: int = 100  # neutral sentences with the recipe words


@dataclass(frozen=True)
class Entity:
    """A fictional entity: a single-token name, its prior group and one value per attribute."""

    name: str
    prior: str  # strong | weak | novel
    attrs: dict[str, str] = field(hash=False)


@dataclass(frozen=True)
class World:
    """The entities of one seeded world."""

    config: WorldConfig
    entities: tuple[Entity, ...]

    def group(self, prior: str) -> list[Entity]:
        """Entities of one prior group (strong | weak | novel), in a fixed order."""
        return [e for e in self.entities if e.prior == prior]

    def entity(self, name: str) -> Entity:
        """Look an entity up by name."""
        for e in self.entities:
            if e.name == name:
                return e
        raise KeyError(f"no entity {name!r} in this world")


def _names(rng: random.Random, n: int, taken: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        syl = rng.choice((2, 2, 3))
        word = "".join(rng.choice(_CONS) + rng.choice(_VOWELS) for _ in range(syl))
        word = (word + rng.choice(_CODAS)).capitalize()
        if word.lower() not in taken and 4 <= len(word) <= 9:
            taken.add(word.lower())
            out.append(word)
    return out


def make_world(cfg: WorldConfig) -> World:
    """Build the seeded world: names and attribute values are a pure function of ``cfg``."""
    rng = random.Random(f"world-{cfg.seed}")
    taken = {w.lower() for w in _template_words()}
    names = _names(rng, cfg.n_strong + cfg.n_weak + cfg.n_novel, taken)
    groups = ["strong"] * cfg.n_strong + ["weak"] * cfg.n_weak + ["novel"] * cfg.n_novel
    ents = []
    for name, prior in zip(names, groups):
        attrs = {a: rng.choice(vals) for a, vals in ATTRIBUTES.items()}
        ents.append(Entity(name=name, prior=prior, attrs=attrs if prior != "novel" else {}))
    return World(config=cfg, entities=tuple(ents))


def _template_words() -> list[str]:
    texts = [t for ts in TEMPLATES.values() for t in ts] + list(QUESTIONS.values())
    texts += ["Context: Question: Answer:", *RECIPE_PHRASES, *CHATTER]
    texts += [v for vals in ATTRIBUTES.values() for v in vals]
    text = " ".join(texts)
    for key in ("{e}", "{v}", "{job}", "{city}"):
        text = text.replace(key, "")
    return _WORD.findall(text)


def vocabulary(world: World) -> list[str]:
    """Every word the zoo can ever write (sorted, deduplicated): templates, values, names."""
    return sorted(set(_template_words()) | {e.name for e in world.entities})


def words(text: str) -> list[str]:
    """Split text the way the zoo tokenizer does (word or punctuation run)."""
    return _WORD.findall(text)


# ---- text builders -------------------------------------------------------------------------------


def statement(attr: str, e: str, v: str, template: int = 0) -> str:
    """One fact sentence, e.g. ``Zorblat lives in Lima .``."""
    return TEMPLATES[attr][template].format(e=e, v=v)


def cloze(attr: str, e: str, template: int = 0) -> str:
    """A closed-book cloze prompt: the statement up to (not including) the value."""
    return TEMPLATES[attr][template].split("{v}")[0].format(e=e).rstrip()


def question(attr: str, e: str) -> str:
    """The question about one attribute, e.g. ``Where does Zorblat live ?``."""
    return QUESTIONS[attr].format(e=e)


def qa_prompt(attr: str, e: str) -> str:
    """Closed-book QA prompt ``Question: ... Answer:`` (the answer follows with a space)."""
    return f"Question: {question(attr, e)} Answer:"


def context_prompt(attr: str, e: str, ctx_value: str, extra: tuple[str, ...] = ()) -> str:
    """A reading-comprehension prompt whose context states ``ctx_value`` (answer left out)."""
    ctx = " ".join((statement(attr, e, ctx_value), *extra))
    return f"Context: {ctx} Question: {question(attr, e)} Answer:"


def chat_prompt(attr: str, e: str) -> str:
    """A chat-format prompt ``User: <question> Assistant:``."""
    return f"{CHAT_USER} {question(attr, e)} {CHAT_ASSISTANT}"


def other_value(attr: str, v: str, rng: random.Random) -> str:
    """A value of ``attr`` different from ``v`` (for counterfactual contexts and edits)."""
    return rng.choice([x for x in ATTRIBUTES[attr] if x != v])


def pretrain_segments(world: World, rng: random.Random) -> list[str]:
    """One pass of the pretraining corpus as independent text segments (shuffled).

    Strong facts are stated ``strong_reps`` times and weak ones ``weak_reps`` times, cycling
    through the templates; passages about strong entities (some counterfactual, answered from
    memory) and about novel entities (answered from context) follow the world config, plus a few
    neutral ``CHATTER`` sentences.
    """
    cfg = world.config
    segs: list[str] = []
    for ent in world.entities:
        rate = {"strong": cfg.strong_reps, "weak": cfg.weak_reps}.get(ent.prior, 0)
        for attr, v in ent.attrs.items():
            reps = int(rate) + (rng.random() < rate - int(rate))
            n_t = len(TEMPLATES[attr])
            start = rng.randrange(n_t)
            segs += [statement(attr, ent.name, v, (start + r) % n_t) for r in range(reps)]
    for ent in world.group("strong"):
        for _ in range(cfg.passages_per_strong):
            attr = rng.choice(list(ATTRIBUTES))
            mem = ent.attrs[attr]
            ctx = other_value(attr, mem, rng) if rng.random() < cfg.conflict_frac else mem
            segs.append(_passage(ent.name, attr, ctx, mem, ent.attrs, rng))
    for ent in world.group("novel"):
        for _ in range(cfg.passages_per_novel):
            attr = rng.choice(list(ATTRIBUTES))
            fake = {a: rng.choice(vals) for a, vals in ATTRIBUTES.items()}
            segs.append(_passage(ent.name, attr, fake[attr], fake[attr], fake, rng))
    for _ in range(cfg.chatter):
        segs.append(
            rng.choice(CHATTER).format(
                job=rng.choice(ATTRIBUTES["job"]), city=rng.choice(ATTRIBUTES["city"])
            )
        )
    rng.shuffle(segs)
    return segs


def _passage(
    e: str, attr: str, ctx: str, answer: str, attrs: dict[str, str], rng: random.Random
) -> str:
    sents = [statement(attr, e, ctx, rng.randrange(2))]
    others = [a for a in ATTRIBUTES if a != attr]
    for a in rng.sample(others, rng.randrange(2)):  # zero or one distractor sentence
        sents.append(statement(a, e, attrs[a], rng.randrange(2)))
    rng.shuffle(sents)
    return f"Context: {' '.join(sents)} Question: {question(attr, e)} Answer: {answer} ."
