"""The JSONL prompt format, validated with file:line:field errors.

One JSON object per line::

    {"id": "f-001", "text": "Alice lives in", "kind": "knowledge", "target": " Paris",
     "label": "paris", "positions": {"subject": "Alice"}}

Fields: ``id`` (str, unique), ``text`` (str, non-empty) are required. Optional: ``kind``
(knowledge | behavior | context | other; default other), ``target`` (str: the expected
continuation), ``label`` (str or int: a class for probes), ``foil`` (str: a contrasting continuation,
e.g. the fact's old value or the memorised answer, for logit-difference metrics), ``positions``
(name -> int token index, negative from the end, or a substring of ``text`` whose last token is
meant), ``corrupt_text``
(str: a corrupted variant for within-model patching), ``context`` (str), and ``meta`` (object,
free-form). Blank lines and lines starting with ``#`` are skipped. Unknown fields are an error,
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
}


class PromptFormatError(UserError, ValueError):
    """A prompt file or record is malformed; the message names file, line and field."""


@dataclass(frozen=True)
class Prompt:
    """One prompt record (see the module docstring for the fields)."""

    id: str
    text: str
    kind: str = "other"
    target: str | None = None
    foil: str | None = None
    label: str | int | None = None
    positions: dict[str, int | str] = field(default_factory=dict)
    corrupt_text: str | None = None
    context: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON-ready dict, without unset optional fields."""
        d = asdict(self)
        return {k: v for k, v in d.items() if v not in (None, {}) or k in ("id", "text")}


def _where(src: str, line: int | None) -> str:
    return f"{src}:{line}" if line is not None else src


def _check_strings(rec: dict, where: str) -> None:
    try:
        json.dumps(rec, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise PromptFormatError(f"{where}: a string holds a lone surrogate escape such as \\ud800, which is not "
                                "text (remove it)") from None


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
    for key in ("id", "text"):
        if key not in rec:
            raise PromptFormatError(f"{where}: missing required field {key!r} (every prompt needs 'id' and 'text')")
    for key, typ in _FIELDS.items():
        if key in rec and rec[key] is not None and (not isinstance(rec[key], typ) or isinstance(rec[key], bool)):
            want = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
            raise PromptFormatError(
                f"{where}: field {key!r} must be {want}, got {type(rec[key]).__name__}"
            )
    for key in ("id", "text"):
        if not rec[key].strip():
            raise PromptFormatError(f"{where}: field {key!r} is {'empty' if not rec[key] else 'blank'} "
                                    "(give it visible text)")
    for key in ("target", "foil", "corrupt_text", "context"):
        if rec.get(key) == "":
            raise PromptFormatError(f"{where}: field {key!r} is empty (leave the field out instead)")
    _check_strings(rec, where)
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
        if isinstance(pos, str) and (not pos or pos not in rec["text"]):
            raise PromptFormatError(
                f"{where}: field 'positions.{name}' is {pos!r}, which does not occur in 'text' "
                "(give a substring of the text or a token index)"
            )
    return Prompt(
        id=rec["id"],
        text=rec["text"],
        kind=kind,
        target=rec.get("target"),
        foil=rec.get("foil"),
        label=rec.get("label"),
        positions=dict(positions),
        corrupt_text=rec.get("corrupt_text"),
        context=rec.get("context"),
        meta=dict(rec.get("meta") or {}),
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
        raise PromptFormatError(f"{path}: no prompts in file (write one JSON object per line; see the README)")
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
