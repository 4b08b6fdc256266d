"""The prompt groups of the context-prior experiment, the prompt-only fixes, and subject positions.

Prompts (JSONL, see docs/experiments.md) of ``kind: context`` with ``meta.condition``:

- ``conflict``: the context states a counterfactual value; ``target`` = the context's answer,
  ``foil`` = the remembered one, ``meta.prior`` = ``strong`` | ``weak``;
- ``agree``: the context states the remembered value (``target``);
- ``none``: no context, a closed-book question (``target`` = the fact);
- ``novel``: an entity the model cannot know (``meta.entity`` supplies unknown names).

Every conflict needs ``context`` (a substring of ``text``) and ``positions.subject`` (the entity as
it appears in ``text``). Plain text for perplexity: ``--text FILE`` (one passage per line), else
the prompts' context statements.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from alignloc.prompts import Prompt, PromptFormatError

CONDITIONS = ("conflict", "agree", "none", "novel")


@dataclass
class PromptSets:
    """The experiment's prompt groups."""

    strong: list[Prompt]  # conflicts on strong priors
    weak: list[Prompt]  # conflicts on weak priors
    agree: list[Prompt]
    closed: list[Prompt]  # condition "none"
    unknown_names: list[str]  # entities the model cannot know (from "novel" prompts)
    texts: list[str]  # plain text for perplexity


def load_sets(prompts: list[Prompt], texts: list[str] | None = None, src: str = "<prompts>") -> PromptSets:
    """Group ``prompts`` by condition; raise PromptFormatError naming the first prompt that lacks a field."""
    by: dict[str, list[Prompt]] = {c: [] for c in CONDITIONS}
    for p in prompts:
        cond = p.meta.get("condition")
        if p.kind != "context" or cond is None:
            continue
        if cond not in CONDITIONS:
            raise PromptFormatError(f"{src}: prompt {p.id!r}: meta.condition is {cond!r}; use one of {', '.join(CONDITIONS)}")
        by[cond].append(p)
    for p in by["conflict"]:
        missing = [f for f, ok in (("target", p.target), ("foil", p.foil), ("context", p.context),
                                   ("positions.subject", p.positions.get("subject")),
                                   ("meta.prior", p.meta.get("prior") in ("strong", "weak"))) if not ok]
        if missing:
            raise PromptFormatError(f"{src}: conflict prompt {p.id!r} lacks {', '.join(missing)} (see docs/experiments.md, the "
                                    "context-prior prompt format)")
        if p.context not in p.text:
            raise PromptFormatError(f"{src}: conflict prompt {p.id!r}: its 'context' does not occur in its 'text'")
    strong = [p for p in by["conflict"] if p.meta["prior"] == "strong"]
    if not strong:
        raise PromptFormatError(f"{src}: no conflict prompts with meta.prior 'strong': nothing to measure")
    names = sorted({p.meta["entity"] for p in by["novel"] if p.meta.get("entity")})
    plain = texts if texts else sorted({p.context for p in prompts if p.context})
    return PromptSets(strong=strong, weak=[p for p in by["conflict"] if p.meta["prior"] == "weak"],
                      agree=by["agree"], closed=by["none"], unknown_names=names, texts=plain)


def _answer_cue(text: str) -> tuple[str, str]:
    """``(body, cue)``: the text split before its last word (e.g. ``Answer:``)."""
    body, _, cue = text.rstrip().rpartition(" ")
    return body, cue


FIXES = ("instruction", "repeat_context", "context_after_question")
REWRITES = ("anonymize_subject",)  # input rewrites: they change what is asked, so they are not "prompt-only fixes"


def apply_fix(p: Prompt, fix: str, instruction: str, unknown_name: str | None = None) -> Prompt:
    """A prompt-only fix of ``p`` (unchanged when the fix does not apply, e.g. no context to repeat).

    ``instruction``: the instruction text put first; ``repeat_context``: the context stated twice;
    ``context_after_question``: the context moved to just before the answer cue (format change);
    ``anonymize_subject`` (a rewrite): the entity renamed to ``unknown_name`` in context and question.
    """
    if fix == "anonymize_subject":
        return with_unknown_subject(p, unknown_name) if p.context and unknown_name and p.positions.get("subject") else p
    if fix == "instruction":
        return dataclasses.replace(p, text=f"{instruction} {p.text}")
    if not p.context or p.context not in p.text:
        return p
    if fix == "repeat_context":
        return dataclasses.replace(p, text=p.text.replace(p.context, f"{p.context} {p.context}", 1))
    if fix == "context_after_question":
        rest = " ".join(p.text.replace(f"Context: {p.context}", "").replace(p.context, "").split())
        body, cue = _answer_cue(rest)
        return dataclasses.replace(p, text=f"{body} Context: {p.context} {cue}")
    raise ValueError(f"unknown prompt fix {fix!r}; choose from {FIXES}")


def subject_mask(p: Prompt, offsets: list[tuple[int, int]], width: int) -> torch.Tensor:
    """Bool ``[width]``: the tokens overlapping any occurrence of ``positions.subject`` in ``text``."""
    subject = p.positions.get("subject")
    out = torch.zeros(width, dtype=torch.bool)
    if not isinstance(subject, str):
        return out
    start = p.text.find(subject)
    while start >= 0:
        end = start + len(subject)
        for i, (a, b) in enumerate(offsets):
            if a < end and b > start and b > a:
                out[i] = True
        start = p.text.find(subject, end)
    return out


def with_unknown_subject(p: Prompt, name: str) -> Prompt:
    """``p`` with every occurrence of its subject replaced by ``name`` (an entity the model cannot know)."""
    subject = p.positions["subject"]
    return dataclasses.replace(p, text=p.text.replace(subject, name),
                               context=p.context.replace(subject, name) if p.context else None,
                               positions={**p.positions, "subject": name})
