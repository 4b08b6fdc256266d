"""What a built artifact depends on besides its configuration: the code that trains and measures it
and the thread count, as hashable parts of its fingerprint (pure, reads only the package's source).

A cached organism is reused only while its fingerprint matches, so the fingerprint must change when
the code that would build it changes: a recipe, the training loop, the data, the measurement or the
specification. The source of those modules is hashed after parsing with comments and docstrings
left out, so editing prose does not rebuild the zoo, while any change to code does.
"""

from __future__ import annotations

import ast
import hashlib
import os
from functools import cache
from pathlib import Path

THREADS_VAR = "ALIGNLOC_ZOO_THREADS"
_ZOO = Path(__file__).resolve().parent
# modules of the zoo that never affect what a build produces (lookup, listing, files on disk, the CLI)
# and the real-weight tier's own (fingerprinted by realdisk)
NOT_TRAINING = {"__init__.py", "registry.py", "realdisk.py", "entry.py", "files.py", "prompts.py",
                "provenance.py"}


def _code_only(source: str) -> str:
    """The parsed module with docstrings removed, dumped (comments are dropped by the parser)."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(
            getattr(body[0], "value", None), ast.Constant
        ) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


def training_files(real: bool = False) -> list[Path]:
    """The source files whose code decides what a zoo build produces: the synthetic tiers' (tiny,
    small, ...), or with ``real`` the real-weight tier's (those plus its own ``real*`` modules)."""
    return [p for p in sorted(_ZOO.glob("*.py"))
            if p.name not in NOT_TRAINING and (real or not p.name.startswith("real"))]


@cache
def training_code_hash(real: bool = False) -> str:
    """A short hash of the training code (``training_files``), stable under comment/docstring edits."""
    h = hashlib.sha256()
    for path in training_files(real):
        h.update(path.name.encode() + b"\0" + _code_only(path.read_text()).encode() + b"\0")
    return h.hexdigest()[:16]


def thread_override() -> int | None:
    """``$ALIGNLOC_ZOO_THREADS`` as an int (every training step uses that many torch threads), or None."""
    raw = os.environ.get(THREADS_VAR, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        from alignloc.zoo.names import ZooError

        raise ZooError(f"${THREADS_VAR}={raw!r} is not a thread count; set a positive integer or unset it")
    return int(raw)
