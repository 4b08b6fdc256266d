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

FORMAT = "alignloc-activation-store"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# Fields that must match for a store to be reused or resumed.
PLAN_KEYS = ("models", "sites", "positions", "dtype", "prompts_hash", "chunk_size", "bos")


class StoreError(RuntimeError):
    """A store is missing, corrupted, incomplete or does not match what was asked."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
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
    if not path.is_file():
        raise StoreError(f"{root}: not an activation store (no {MANIFEST}); run `alignloc capture ... --out {root}`")
    try:
        m = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise StoreError(f"{path}: manifest is not valid JSON ({e}); the store is corrupted, capture again") from None
    if m.get("format") != FORMAT:
        raise StoreError(f"{path}: not an alignloc activation store manifest")
    if m.get("format_version", 0) > FORMAT_VERSION:
        raise StoreError(f"{path}: store format {m['format_version']} is newer than this alignloc; upgrade alignloc")
    return m


def plan_diff(a: dict, b: dict) -> list[str]:
    """Names of the plan fields in which two manifests differ (empty when a store can be reused)."""
    return [k for k in PLAN_KEYS if a.get(k) != b.get(k)]
