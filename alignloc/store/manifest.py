"""The store's manifest and file primitives: atomic writes and checksums.

Layout of a store directory::

    manifest.json                       # models, sites, positions, dtype, prompts, chunks
    prompts.jsonl                       # the prompt set, as captured
    {side}/{kind}/chunk-00000.safetensors   # tensors "L{layer}": [rows, d_model] or [rows, pos, d_model]
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from alignloc.errors import UserError
from alignloc.store.schema import manifest_problem
from alignloc.textio import read_json

FORMAT = "alignloc-activation-store"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# Fields that must match for a store to be reused or resumed.
PLAN_KEYS = ("models", "sites", "positions", "dtype", "prompts_hash", "chunk_size", "bos")


class StoreError(UserError, RuntimeError):
    """A store is missing, corrupted, incomplete or does not match what was asked."""


_UMASK: int | None = None


def file_mode() -> int:
    """The mode of a new file under this process's umask (0o644 for the usual umask 022)."""
    global _UMASK
    if _UMASK is None:  # read once: os.umask can only be read by setting it
        _UMASK = os.umask(0o022)
        os.umask(_UMASK)
    return 0o666 & ~_UMASK


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half.

    The file gets the usual permissions of a new file (0666 less the umask, so 0644 by default),
    not the 0600 of a temporary file: reports and stores are meant to be read by others.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    atomic_write_bytes(path, json.dumps(obj, indent=1, sort_keys=False).encode())


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def read_manifest(root: Path) -> dict:
    """Load and sanity-check ``root/manifest.json``; StoreError with what to do otherwise."""
    path = root / MANIFEST
    if not root.is_dir():
        raise StoreError(f"{root}: no such folder (give a store folder written by `alignloc capture`)")
    if not path.is_file():
        raise StoreError(f"{root}: not an activation store (no {MANIFEST}) (create one with `alignloc capture ... --out DIR`)")
    redo = f"the store is corrupted: capture again into a new --out, or remove {root} first"
    m = read_json(path, StoreError, "manifest", redo)
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise StoreError(f"{path}: not an alignloc activation store manifest (point to a folder written by `alignloc capture`)")
    version = m.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise StoreError(f"{path}: store format {version} is newer than this alignloc (upgrade alignloc)")
    problem = manifest_problem(m)
    if problem:
        raise StoreError(f"{path}: {problem} (the manifest was edited or is corrupted; {redo})")
    return m


def plan_diff(a: dict, b: dict) -> list[str]:
    """Names of the plan fields in which two manifests differ (empty when a store can be reused)."""
    return [k for k in PLAN_KEYS if a.get(k) != b.get(k)]
