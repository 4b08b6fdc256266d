"""The format-amplification world: the same correct answers in three formats at set frequencies.

Why: RL post-training is reported to collapse onto one of the answer formats a model met in
pretraining, and which one wins to depend on scale (Zhao et al. 2025, "Echo Chamber"). To test
that where the answer is known, the ``base-formats`` bases are pretrained on the world corpus plus
closed-book answers ``Q: <question>`` -> one of

* ``short`` (``A: Lima .``), by default 60 % of the answers,
* ``sentence`` (``The answer is Lima .``), 30 %,
* ``restate`` (``Nafi lives in Lima .``: the fact's canonical statement), 10 %,

and ``rl-formats`` runs RL whose reward is the correctness of the extracted value only
(``extract_value``: the first attribute value in the answer, whatever the format around it).
Everything here is pure (no torch, no disk).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from alignloc.prompts import Prompt
from alignloc.zoo.world import (
    ATTRIBUTES,
    Entity,
    World,
    pretrain_segments,
    question,
    statement,
    words,
)

FORMATS = ("short", "sentence", "restate")
FORMAT_BASES = ("base-formats", "base-formats-large")
FORMAT_WORDS = ("Q", "A", "answer")  # added to the world's vocabulary (the formats bases' tokenizer)
MAX_COMPLETION = 7  # tokens sampled per answer: the longest format (``Nafi likes the colour red .``) has 6
EVAL_SAMPLES = 8  # sampled answers per prompt when the shares are measured
EVAL_SEED = 0
VALUES = frozenset(v for vals in ATTRIBUTES.values() for v in vals)
# what follows the name in each canonical statement: ``lives in``, ``works as a``, ...
_VERBS = [words(statement(a, "E", "V", 0))[1:-2] for a in ATTRIBUTES]


def format_question(attr: str, e: str) -> str:
    """The closed-book prompt of the formats corpus, e.g. ``Q: Where does Nafi live ?``."""
    return f"Q: {question(attr, e)}"


def format_answer(fmt: str, attr: str, e: str, v: str) -> str:
    """The answer ``v`` in format ``fmt`` (with its leading space), e.g. `` A: Lima .``."""
    if fmt == "short":
        return f" A: {v} ."
    if fmt == "sentence":
        return f" The answer is {v} ."
    if fmt == "restate":
        return " " + statement(attr, e, v, 0)
    raise ValueError(f"unknown format {fmt!r} (use one of {', '.join(FORMATS)})")


def classify(completion: Sequence[str], entity: str) -> str:
    """The format an answer (as words) starts in: a name of ``FORMATS``, or ``other``. A restatement
    counts whichever name it copies (``Tupi lives in``): the format, not the copy, is classified;
    ``entity`` is the prompt's, kept for the callers' records."""
    head = list(completion[:2])
    if head[:1] == ["A"]:
        return "short"
    if head == ["The", "answer"]:
        return "sentence"
    if len(completion) > 1 and any(list(completion[1 : 1 + len(v)]) == v for v in _VERBS):
        return "restate"
    return "other"


def extract_value(completion: Sequence[str]) -> str | None:
    """The first attribute value among an answer's words (None if there is none): what is graded."""
    return next((w for w in completion if w in VALUES), None)


def is_correct(completion: Sequence[str], answer: str) -> bool:
    """Reward of the RL recipe: the extracted value is the true one (the format plays no part)."""
    return extract_value(completion) == answer.strip()


def formats_corpus(shares: Sequence[float], qa_reps: float) -> Callable[[World, random.Random], list[str]]:
    """A corpus function (world, rng) -> segments: the world corpus plus ``qa_reps`` answers per known
    fact and pass (a fraction is an expected count), each in a format drawn with ``shares``."""
    if len(shares) != len(FORMATS) or abs(sum(shares) - 1) > 1e-6 or min(shares) < 0:
        raise ValueError(f"format shares must be {len(FORMATS)} non-negative numbers summing to 1, got {shares}")

    def segments(world: World, rng: random.Random) -> list[str]:
        segs = pretrain_segments(world, rng)
        for ent in world.group("strong") + world.group("weak"):
            for attr, v in ent.attrs.items():
                for _ in range(int(qa_reps) + (rng.random() < qa_reps - int(qa_reps))):
                    fmt = rng.choices(FORMATS, weights=shares)[0]
                    segs.append(format_question(attr, ent.name) + format_answer(fmt, attr, ent.name, v))
        rng.shuffle(segs)
        return segs

    return segments


def format_prompts(entities: Sequence[Entity], target_format: str | None = None, foil_format: str | None = None,
                   tag: str = "fmt") -> list[Prompt]:
    """``Q: <question>`` prompts for ``entities`` (kind ``behavior``; ``meta.answer`` is the value).

    With ``target_format`` the target is the answer in that format (``foil_format``: the foil);
    layer-diff then reads the format's first token as the behavior."""
    out = []
    for ent in entities:
        for attr, v in ent.attrs.items():
            out.append(Prompt(
                id=f"{tag}-{ent.name}-{attr}",
                text=format_question(attr, ent.name),
                kind="behavior",
                target=format_answer(target_format, attr, ent.name, v) if target_format else None,
                foil=format_answer(foil_format, attr, ent.name, v) if foil_format else None,
                label=attr,
                positions={"subject": ent.name, "last": -1},
                meta={"answer": f" {v}", "prior": ent.prior, "attribute": attr, "entity": ent.name},
            ))
    return out


def shares_of(entities: Sequence[str], completions: Sequence[Sequence[str]], answers: Sequence[str]) -> dict[str, float]:
    """Flat metrics of sampled answers: ``format_share_<fmt>`` (``other`` too; they sum to 1),
    ``format_answer_acc`` and ``format_acc_<fmt>`` (accuracy within each format, nan if unused)."""
    fmts = [classify(c, e) for c, e in zip(completions, entities, strict=True)]
    ok = [is_correct(c, a) for c, a in zip(completions, answers, strict=True)]
    n = max(1, len(fmts))
    out = {f"format_share_{f}": round(fmts.count(f) / n, 4) for f in (*FORMATS, "other")}
    out["format_answer_acc"] = round(sum(ok) / n, 4)
    for f in FORMATS:
        hits = [k for k, g in zip(ok, fmts) if g == f]
        out[f"format_acc_{f}"] = round(sum(hits) / len(hits), 4) if hits else float("nan")
    return out


def completion_words(tok, ids: Sequence[int]) -> list[str]:
    """The words of a sampled answer (special tokens dropped)."""
    return words(tok.decode(list(ids), skip_special_tokens=True))
