"""Reading files a user hands in: UTF-8 text and strict, shallow JSON, with errors that name the place.

Every reader takes the error class to raise (``PromptFormatError``, ``StoreError``, ...) so that a
bad file surfaces as the caller's one-line user error, never as a ``UnicodeDecodeError``,
``RecursionError`` or ``JSONDecodeError`` traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MAX_DEPTH = 64  # nesting levels of arrays/objects accepted in any JSON input


def read_text(path: str | Path, error: type[Exception], what: str) -> str:
    """The UTF-8 text of file ``path`` (a leading BOM dropped); ``error`` if missing, unreadable or not UTF-8."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{path}: is a folder, not a {what} (give the file's path)")
    if not path.is_file():
        raise error(f"{path}: {what} not found (check the path)")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise error(f"{path}: cannot read the {what}: {e.strerror} (check its permissions)") from None
    return decode_utf8(data, str(path), error)


def decode_utf8(data: bytes, src: str, error: type[Exception]) -> str:
    """``data`` decoded as UTF-8; ``error`` naming ``src:line`` and the offending byte otherwise."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise error(f"{src}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at column {col}) "
                    "(save the file as UTF-8)") from None
    return text.removeprefix("\ufeff")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def json_depth(obj: Any) -> int:
    """Nesting depth of arrays/objects in a decoded JSON value (iterative: never recurses)."""
    deepest, todo = 0, [(obj, 1)]
    while todo:
        x, d = todo.pop()
        if isinstance(x, dict | list):
            deepest = max(deepest, d)
            todo.extend((v, d + 1) for v in (x.values() if isinstance(x, dict) else x))
    return deepest


def parse_json(text: str, where: str, error: type[Exception], hint: str = "") -> Any:
    """Strict JSON (no NaN/Infinity), nested at most ``MAX_DEPTH`` levels; ``error`` naming ``where`` otherwise."""
    hint = f" ({hint})" if hint else ""
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        at = f"column {e.colno}" if "\n" not in text.strip() else f"line {e.lineno}, column {e.colno}"
        raise error(f"{where}: not valid JSON ({e.msg} at {at}){hint}") from None
    except RecursionError:
        raise error(f"{where}: JSON nested too deeply (at most {MAX_DEPTH} levels){hint}") from None
    except ValueError as e:  # NaN/Infinity, integers too long to convert
        raise error(f"{where}: not valid JSON ({e}){hint}") from None
    if json_depth(obj) > MAX_DEPTH:
        raise error(f"{where}: JSON nested too deeply (at most {MAX_DEPTH} levels){hint}")
    return obj


def read_json(path: str | Path, error: type[Exception], what: str, hint: str = "") -> Any:
    """``parse_json`` of the UTF-8 text of file ``path``."""
    return parse_json(read_text(path, error, what), str(path), error, hint)
