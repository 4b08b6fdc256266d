"""What a valid store manifest holds: every field's type and the facts that tie the fields together.

``manifest_problem(m)`` is pure: it returns the first problem as text naming the field (or None),
so that an edited, truncated or hostile manifest is reported before any of it is used (a chunk's
file names, for instance, are only ever the store's own shard paths: no ``..``, no absolute path).
"""

from __future__ import annotations

import re
from typing import Any

from alignloc.sites import SiteError, parse_site

SIDES = ("base", "tuned")
DTYPE_NAMES = ("float32", "float16", "bfloat16")  # the keys of alignloc.store.writer.DTYPES
MAX_TOKENS = 1 << 22  # longer than any context window: a larger length is an edited manifest
TOP_FIELDS: dict[str, type] = {
    "format": str, "format_version": int, "alignloc_version": str, "created": str, "models": dict, "sites": list,
    "positions": str, "dtype": str, "prompts_hash": str, "chunk_size": int, "bos": bool, "n_prompts": int,
    "n_chunks": int, "lengths": list, "position_index": list, "max_len": int, "chunks": list, "complete": bool,
}
MODEL_FIELDS: dict[str, type] = {"ref": str, "model_type": str, "n_layers": int, "d_model": int, "weights_sha256": str}
CHUNK_FIELDS: dict[str, type] = {"index": int, "start": int, "end": int, "files": dict}
_SHA = re.compile(r"^[0-9a-f]{64}$")


def _type_problem(obj: dict, fields: dict[str, type], prefix: str = "") -> str | None:
    for key, typ in fields.items():
        if key not in obj:
            return f"field {prefix}{key!r} is missing"
        value = obj[key]
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            return f"field {prefix}{key!r} must be {typ.__name__}, got {type(value).__name__}"
    return None


def _ints(values: list, name: str, lo: int) -> str | None:
    if any(not isinstance(v, int) or isinstance(v, bool) or v < lo for v in values):
        return f"field {name!r} must hold integers >= {lo}"
    return None


def _models_problem(models: dict) -> str | None:
    if not models or set(models) - set(SIDES):
        return f"field 'models' must name the sides {' and '.join(SIDES)}, got {sorted(models)}"
    for side, info in models.items():
        if not isinstance(info, dict):
            return f"field 'models.{side}' must be dict, got {type(info).__name__}"
        problem = _type_problem(info, MODEL_FIELDS, f"models.{side}.")
        if problem:
            return problem
        if info["n_layers"] < 1 or info["d_model"] < 1:
            return f"field 'models.{side}' has n_layers {info['n_layers']} and d_model {info['d_model']} (must be >= 1)"
    return None


def _sites_problem(m: dict) -> str | None:
    if not m["sites"] or not all(isinstance(s, str) for s in m["sites"]):
        return "field 'sites' must be a non-empty list of site names"
    n_layers = min(info["n_layers"] for info in m["models"].values())
    for name in m["sites"]:
        try:
            site = parse_site(name)
        except SiteError:
            return f"field 'sites' holds {name!r}, which is not a site"
        if site.layer >= n_layers:
            return f"field 'sites' holds {name!r}, beyond the models' {n_layers} layers"
    return None


def _rows_problem(m: dict) -> str | None:
    n, size = m["n_prompts"], m["chunk_size"]
    if n < 1 or size < 1:
        return f"fields 'n_prompts' ({n}) and 'chunk_size' ({size}) must be >= 1"
    if m["n_chunks"] != (n + size - 1) // size:
        return f"field 'n_chunks' is {m['n_chunks']}, but {n} prompts in chunks of {size} make {(n + size - 1) // size}"
    for key in ("lengths", "position_index"):
        if len(m[key]) != n:
            return f"field {key!r} has {len(m[key])} entries for {n} prompts"
    problem = _ints(m["lengths"], "lengths", 1) or _ints(m["position_index"], "position_index", -1)
    if problem:
        return problem
    if max(m["lengths"]) > MAX_TOKENS:
        return f"field 'lengths' holds {max(m['lengths'])} tokens, more than any model's context ({MAX_TOKENS})"
    if m["max_len"] != max(m["lengths"]):
        return f"field 'max_len' is {m['max_len']}, but the longest prompt has {max(m['lengths'])} tokens"
    if any(i >= length for i, length in zip(m["position_index"], m["lengths"], strict=True)):
        return "field 'position_index' points past the end of a prompt"
    if (m["positions"] == "all") != all(i == -1 for i in m["position_index"]):
        return "field 'position_index' does not match field 'positions'"
    return None


def _chunks_problem(m: dict) -> str | None:
    n, size = m["n_prompts"], m["chunk_size"]
    kinds = {name.partition(".")[0] for name in m["sites"]}
    seen: set[int] = set()
    for c in m["chunks"]:
        if not isinstance(c, dict):
            return f"field 'chunks' must hold objects, got {type(c).__name__}"
        problem = _type_problem(c, CHUNK_FIELDS, "chunks[].")
        if problem:
            return problem
        i = c["index"]
        if not 0 <= i < m["n_chunks"] or i in seen:
            return f"field 'chunks' holds index {i}, outside 0..{m['n_chunks'] - 1} or repeated"
        seen.add(i)
        if (c["start"], c["end"]) != (i * size, min((i + 1) * size, n)):
            return f"chunk {i} covers rows {c['start']}:{c['end']}, expected {i * size}:{min((i + 1) * size, n)}"
        # every site of some sides (a capture runs one side after the other); of every side once complete
        by_side = {side: {f"{side}/{kind}/chunk-{i:05d}.safetensors" for kind in kinds} for side in m["models"]}
        have = set(c["files"])
        sides = [side for side, files in by_side.items() if files & have]
        expected = set().union(*(by_side[side] for side in sides))
        if not sides or have != expected or (m["complete"] and len(sides) < len(by_side)):
            odd = sorted(have ^ set().union(*by_side.values()))[:2]
            return f"chunk {i} lists files {odd} that do not match the store's sides and sites"
        if not all(isinstance(s, str) and _SHA.match(s) for s in c["files"].values()):
            return f"chunk {i}: a checksum is not a sha256 hex digest"
    if m["complete"] and len(seen) != m["n_chunks"]:
        return f"field 'complete' is true, but only {len(seen)} of {m['n_chunks']} chunks are listed"
    return None


def manifest_problem(m: Any) -> str | None:
    """The first thing wrong with a decoded manifest (naming the field), or None when it is valid."""
    if not isinstance(m, dict):
        return f"the manifest must be a JSON object, got {type(m).__name__}"
    problem = _type_problem(m, TOP_FIELDS)
    if problem:
        return problem
    if m["dtype"] not in DTYPE_NAMES:
        return f"field 'dtype' is {m['dtype']!r}, not one of {', '.join(DTYPE_NAMES)}"
    if "backend" in m and not isinstance(m["backend"], str):
        return f"field 'backend' must be str, got {type(m['backend']).__name__}"
    return _models_problem(m["models"]) or _sites_problem(m) or _rows_problem(m) or _chunks_problem(m)

