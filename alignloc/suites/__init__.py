"""Built-in prompt suites, shipped as package data, so that a real base/tuned pair needs no prompt file.

A researcher comparing, say, SmolLM2-135M with SmolLM2-135M-Instruct wants the same broad probes
every time: requests the tuned model answers (and a few it declines), facts the base model already
knew, and plain text. Writing those files by hand for each study makes results hard to compare, so
three hand-checked sets ship inside the package and are read with ``importlib.resources`` (which
works from a wheel, a zip or a source checkout alike):

- ``chat``: single-turn requests by category, multi-turn conversations and mild requests that
  safety-tuned assistants usually decline (``meta.decline``). Rows hold ``messages``, not ``text``:
  only a model's chat template knows how to render them, and no ``target``: the tuned model's own
  answer becomes the target at run time.
- ``knowledge``: closed-book facts with a ``target`` and a ``foil`` (a wrong value of the same
  relation) for logit-difference metrics; ``meta.relation`` and ``meta.subject`` name the fact.
- ``generic``: neutral English sentences, one a line, for reading the first tokens of generic text.

The files are data, validated by the ordinary prompt loader, so a suite row obeys exactly the rules
of a user's own prompt file.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

from alignloc.errors import UsageError
from alignloc.prompts import Prompt, check_unique_ids, load_prompts

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable


class SuiteError(UsageError):
    """An unknown or repeated suite name; the message lists the valid names."""


@dataclass(frozen=True)
class Suite:
    """Where a suite's rows live (a file under ``alignloc/suites/data``) and what they are for."""

    file: str
    description: str
    count_by: str | None  # the ``meta`` key whose values ``list_suites`` counts


SUITES: dict[str, Suite] = {
    "chat": Suite(
        "chat.jsonl",
        "chat requests (single-turn, multi-turn, mild declines) as messages; "
        "the tuned model's answer is the target",
        "category",
    ),
    "knowledge": Suite(
        "knowledge.jsonl",
        "closed-book facts with a target and a foil, over ten relations",
        "relation",
    ),
    "generic": Suite(
        "generic.txt", "neutral English sentences, for the first tokens of generic text", None
    ),
}


def _data(file: str) -> Traversable:
    return resources.files(__name__) / "data" / file


def _suite(name: str) -> Suite:
    if name not in SUITES:
        raise SuiteError(f"unknown suite {name!r} (valid suites: {', '.join(SUITES)})")
    return SUITES[name]


def generic_corpus() -> list[str]:
    """The bundled generic English text, one passage a line (blank lines dropped)."""
    text = _data(SUITES["generic"].file).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def load_suite(name: str) -> list[Prompt]:
    """The prompts of one built-in suite (``chat``, ``knowledge`` or ``generic``), validated.

    ``generic`` lines become prompts with ids ``generic-0001``... and kind ``other``.
    """
    suite = _suite(name)
    if suite.file.endswith(".txt"):
        return [
            Prompt(id=f"{name}-{i:04d}", text=t) for i, t in enumerate(generic_corpus(), start=1)
        ]
    with resources.as_file(_data(suite.file)) as path:
        return load_prompts(path)


def load_suites(names: str) -> list[Prompt]:
    """The prompts of a comma-separated list of suites (``"chat,knowledge"``), in the order named."""
    parts = [part.strip() for part in names.split(",")]
    if not all(parts):
        raise SuiteError(
            f"empty suite name in {names!r} (give a comma-separated list of: {', '.join(SUITES)})"
        )
    for part in parts:
        _suite(part)
    repeated = sorted({p for p in parts if parts.count(p) > 1})
    if repeated:
        raise SuiteError(f"suite {repeated[0]!r} named twice in {names!r} (name each suite once)")
    prompts = [p for part in parts for p in load_suite(part)]
    check_unique_ids(prompts, f"suites {names!r}")
    return prompts


def list_suites() -> list[dict]:
    """Each suite's name, description, file, size and its rows counted per category or relation."""
    out = []
    for name, suite in SUITES.items():
        prompts = load_suite(name)
        counts = (
            Counter(p.meta.get(suite.count_by) for p in prompts) if suite.count_by else Counter()
        )
        out.append(
            {
                "name": name,
                "description": suite.description,
                "file": suite.file,
                "size": len(prompts),
                "counts": dict(sorted(counts.items(), key=lambda kv: str(kv[0]))),
            }
        )
    return out
