"""The JSONL prompt format, validated with file:line:field errors.

One JSON object per line::

    {"id": "f-001", "text": "Alice lives in", "kind": "knowledge", "target": " Paris",
     "label": "paris", "positions": {"subject": "Alice"}}

Fields: ``id`` (str, unique) and ``text`` (str, non-empty) are required, except that a chat gives
``messages`` instead of ``text``: a list of ``{"role": "system"|"user"|"assistant", "content": str}``
turns (an optional system turn first, then user and assistant alternating, ending with user), kept
as turns because only a model's chat template knows how to render them. Optional: ``kind``
(knowledge | behavior | context | other; default other), ``target`` (str: the expected
continuation), ``label`` (str or int: a class for probes), ``foil`` (str: a contrasting continuation,
e.g. the fact's old value or the memorised answer, for logit-difference metrics), ``positions``
(name -> int token index, negative from the end, or a substring of ``text`` whose last token is
meant), ``corrupt_text``
(str: a corrupted variant for within-model patching), ``context`` (str), and ``meta`` (object,
free-form; ``meta.per_token`` true scores the target by its mean log-prob per token instead of the sum). Blank lines and lines starting with ``#`` are skipped. Unknown fields are an error,
so that a typo (``taget``) is not silently ignored.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from alignloc.errors import UserError
from alignloc.textio import parse_json, read_text

KINDS = ("knowledge", "behavior", "context", "other")
_FIELDS = {
    "id": str,
    "text": str,
    "kind": str,
    "target": str,
    "foil": str,
    "label": (str, int),
    "positions": dict,
    "corrupt_text": str,
    "context": str,
    "meta": dict,
    "messages": list,
}
ROLES = ("system", "user", "assistant")


class PromptFormatError(UserError, ValueError):
    """A prompt file or record is malformed; the message names file, line and field."""


@dataclass(frozen=True)
class Prompt:
    """One prompt record (see the module docstring for the fields)."""

    id: str
    text: str | None = None
    kind: str = "other"
    target: str | None = None
    foil: str | None = None
    label: str | int | None = None
    positions: dict[str, int | str] = field(default_factory=dict)
    corrupt_text: str | None = None
    context: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    messages: tuple[dict[str, str], ...] | None = None  # chat turns, in place of ``text``

    def __post_init__(self) -> None:
        # exactly one of the two, so that no consumer silently reads an empty prompt
        if (self.text is None) == (self.messages is None):
            raise PromptFormatError(f"prompt {self.id!r}: give exactly one of 'text' and 'messages'")
        if self.messages is not None and not isinstance(self.messages, tuple):
            object.__setattr__(self, "messages", tuple(dict(m) for m in self.messages))

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON-ready dict, without unset optional fields."""
        d = asdict(self)
        if self.messages is not None:
            d["messages"] = [dict(m) for m in self.messages]
        return {k: v for k, v in d.items() if v not in (None, {}) or k == "id"}


def _where(src: str, line: int | None) -> str:
    return f"{src}:{line}" if line is not None else src


def _check_strings(rec: dict, where: str) -> None:
    try:
        json.dumps(rec, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise PromptFormatError(f"{where}: a string holds a lone surrogate escape such as \\ud800, which is not "
                                "text (remove it)") from None


def _messages(value: list, where: str) -> tuple[dict[str, str], ...]:
    """The validated chat turns of field ``messages``; errors name the turn."""
    turns = []
    for i, m in enumerate(value):
        at = f"{where}: field 'messages[{i}]'"
        if not isinstance(m, dict) or set(m) != {"role", "content"}:
            got = f"keys {sorted(m)}" if isinstance(m, dict) else type(m).__name__
            raise PromptFormatError(f"{at} must be an object with exactly 'role' and 'content', got {got}")
        if m["role"] not in ROLES:
            raise PromptFormatError(f"{at}.role is {m['role']!r} (use one of {', '.join(ROLES)})")
        if not isinstance(m["content"], str) or not m["content"].strip():
            raise PromptFormatError(f"{at}.content must be non-blank text")
        turns.append({"role": m["role"], "content": m["content"]})
    roles = [m["role"] for m in turns]
    chat = roles[1:] if roles[:1] == ["system"] else roles
    if not chat or chat != ["user", "assistant"] * (len(chat) // 2) + ["user"]:
        raise PromptFormatError(
            f"{where}: field 'messages' has roles {', '.join(roles) or 'none'} (after an optional "
            "system turn, user and assistant alternate, starting and ending with user)"
        )
    return tuple(turns)


def prompt_from_dict(rec: Any, src: str = "<prompts>", line: int | None = None) -> Prompt:
    """Validate one decoded record and build a Prompt; errors name ``src:line`` and the field."""
    where = _where(src, line)
    if not isinstance(rec, dict):
        raise PromptFormatError(f"{where}: expected a JSON object, got {type(rec).__name__} (one object per line)")
    for key in rec:
        if key not in _FIELDS:
            raise PromptFormatError(
                f"{where}: unknown field {key!r} (allowed fields: {', '.join(_FIELDS)})"
            )
    body = "messages" if "messages" in rec else "text"
    for key in ("id", body):
        if key not in rec:
            raise PromptFormatError(f"{where}: missing required field {key!r} (every prompt needs 'id' and "
                                    "'text', or 'messages' for a chat)")
    if "text" in rec and "messages" in rec:
        raise PromptFormatError(f"{where}: fields 'text' and 'messages' are both given (give 'text' for a raw "
                                "prompt or 'messages' for a chat, not both)")
    for key, typ in _FIELDS.items():
        required = key in ("id", body)
        if key in rec and (rec[key] is not None or required) and (not isinstance(rec[key], typ) or isinstance(rec[key], bool)):
            want = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
            raise PromptFormatError(
                f"{where}: field {key!r} must be {want}, got {type(rec[key]).__name__}"
            )
    for key in ("id", "text") if body == "text" else ("id",):
        if not rec[key].strip():
            raise PromptFormatError(f"{where}: field {key!r} is {'empty' if not rec[key] else 'blank'} "
                                    "(give it visible text)")
    for key in ("target", "foil", "corrupt_text", "context"):
        if rec.get(key) == "":
            raise PromptFormatError(f"{where}: field {key!r} is empty (leave the field out instead)")
    _check_strings(rec, where)
    messages = _messages(rec["messages"], where) if body == "messages" else None
    if messages is not None and rec.get("corrupt_text") is not None:
        raise PromptFormatError(f"{where}: field 'corrupt_text' needs 'text' (a chat has no text to corrupt "
                                "until a template renders it; leave the field out)")
    kind = rec.get("kind") or "other"
    if kind not in KINDS:
        raise PromptFormatError(f"{where}: field 'kind' is {kind!r} (use one of {', '.join(KINDS)})")
    positions = rec.get("positions") or {}
    for name, pos in positions.items():
        if isinstance(pos, bool) or not isinstance(pos, (int, str)):
            raise PromptFormatError(
                f"{where}: field 'positions.{name}' must be a token index (int) or a substring "
                f"of 'text' (str), got {pos!r}"
            )
        if isinstance(pos, str) and messages is not None:
            raise PromptFormatError(
                f"{where}: field 'positions.{name}' is a substring, which needs 'text' (a chat's text is "
                "rendered later by a template; give a token index)"
            )
        if isinstance(pos, str) and (not pos or pos not in rec["text"]):
            raise PromptFormatError(
                f"{where}: field 'positions.{name}' is {pos!r}, which does not occur in 'text' "
                "(give a substring of the text or a token index)"
            )
    return Prompt(
        id=rec["id"],
        text=rec.get("text"),
        kind=kind,
        target=rec.get("target"),
        foil=rec.get("foil"),
        label=rec.get("label"),
        positions=dict(positions),
        corrupt_text=rec.get("corrupt_text"),
        context=rec.get("context"),
        meta=dict(rec.get("meta") or {}),
        messages=messages,
    )


def check_unique_ids(prompts: Iterable[Prompt], src: str = "<prompts>") -> None:
    """Raise PromptFormatError if two prompts share an id."""
    seen: set[str] = set()
    for p in prompts:
        if p.id in seen:
            raise PromptFormatError(f"{src}: duplicate id {p.id!r} (ids must be unique)")
        seen.add(p.id)


def load_prompts(path: str | Path) -> list[Prompt]:
    """Read and validate a JSONL prompt file; raise PromptFormatError naming file:line:field."""
    path = Path(path)
    text = read_text(path, PromptFormatError, "prompt file")
    prompts: list[Prompt] = []
    seen: dict[str, int] = {}
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        rec = parse_json(line, f"{path}:{lineno}", PromptFormatError, "each line must be one JSON object")
        p = prompt_from_dict(rec, str(path), lineno)
        if p.id in seen:
            raise PromptFormatError(
                f"{path}:{lineno}: field 'id': duplicate id {p.id!r} (first on line {seen[p.id]}; ids must be unique)"
            )
        seen[p.id] = lineno
        prompts.append(p)
    if not prompts:
        raise PromptFormatError(f"{path}: no prompts in file (write one JSON object per line; see docs/guide.md)")
    return prompts


def dumps_prompts(prompts: Iterable[Prompt]) -> str:
    """Prompts as JSONL text (one record a line), as ``load_prompts`` reads them."""
    return "".join(json.dumps(p.to_json(), ensure_ascii=False) + "\n" for p in prompts)


def save_prompts(prompts: Iterable[Prompt], path: str | Path) -> Path:
    """Write prompts as JSONL (one record a line) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps_prompts(prompts), encoding="utf-8")
    return path


def prompts_hash(prompts: Iterable[Prompt]) -> str:
    """A content hash of the prompt set (order matters), for store manifests."""
    h = hashlib.sha256()
    for p in prompts:
        h.update(json.dumps(p.to_json(), sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]
