"""The zoo on disk: build (atomically, with reuse; each artifact by ``artifacts``), resolve and list organisms.

Layout under ``zoo_root()`` (``$ALIGNLOC_ZOO`` or ``platformdirs.user_cache_dir("alignloc")/zoo``)::

    <size>/base/{model/, prompts/*.jsonl, info.json}
    <size>/base-large/{model/, prompts/*.jsonl, info.json}
    <size>/base-fmt/{model/, prompts/*.jsonl, info.json}    (base trained on with rare-format QA documents)
    <size>/<name>/{base/, tuned/, [adapter/], [drift/], prompts/*.jsonl, ground_truth.json}

``drift/`` (``-drift`` organisms only) is the base plus the organism's drift without the edit: its
exact null pair. A ``-drift`` organism is built from ``control-drift``, which is built first.

Every artifact is written into a temporary sibling directory and renamed into place only when
complete, so an interrupted build never leaves a directory that looks built. A built artifact is
reused when its recorded ``fingerprint`` (config, zoo format, and for organisms the base's weight
hash) matches; otherwise it is rebuilt. All numbers are measured on the saved checkpoints.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from alignloc.zoo import real, realdisk
from alignloc.zoo.artifacts import (
    BASES,
    DRIFT_CONTROL,
    DRIFT_CONTROLS,
    Log,
    base_fingerprint,
    base_tokenizer,
    build_base,
    build_organism,
    n_layers_by_base,
    organism_fingerprint,
    read_meta,
)
from alignloc.zoo.config import SizeConfig, size_config
from alignloc.zoo.entry import ZooEntry, zoo_root
from alignloc.zoo.files import prompt_map, quiet, sweep_stale, weights_sha256
from alignloc.zoo.fmtorgs import SURFACING_BASE, SURFACING_ORGANISMS
from alignloc.zoo.names import drift_control, parse_name, valid_names_hint
from alignloc.zoo.world import make_world

DEFAULT_ORGANISMS = [
    "chat-sft-upper",
    "chat-sft-lower",
    "chat-sft-full",
    "refusal-lora-L1",
    "refusal-lora-L2",
    "fact-edit-L1",
    "dpo-polite",
    "control-continued",
]
# The natural hard tier: the confined edits trained on top of that drift, sequentially (drift.natural)
NATURAL_ORGANISMS = [
    "chat-sft-upper-natural",
    "chat-sft-lower-natural",
    "refusal-lora-L1-natural",
    "refusal-lora-L2-natural",
    "fact-edit-L1-natural",
]
# The natural tier on the 8-layer base: single-layer edits at five different layers, so that a random
# ranking's expected hit@1 is 1/8 and no constant answer beats 1/5
NATURAL_LARGE_ORGANISMS = [
    "refusal-lora-L2-natural-large",
    "refusal-lora-L5-natural-large",
    "refusal-lora-L7-natural-large",
    "fact-edit-L3-natural-large",
    "fact-edit-L6-natural-large",
]
# The hard tier: the confined edits again, under a drift that moves every layer (drift.py)
HARD_ORGANISMS = [
    "chat-sft-upper-drift",
    "chat-sft-lower-drift",
    "refusal-lora-L1-drift",
    "refusal-lora-L2-drift",
    "fact-edit-L1-drift",
]
DEFAULT_ORGANISM = "chat-sft-upper"


# ---- public API ----------------------------------------------------------------------------------


def _check_name(name: str, cfg: SizeConfig) -> str:
    """The base a name needs; ``ValueError`` with the valid names if unknown."""
    if name in BASES:
        return name
    return parse_name(name, n_layers_by_base(cfg)).base


def check_size(size: str) -> None:
    """ZooError unless ``size`` is a zoo size (``tiny``, ``small``, or ``real`` for real weights)."""
    if size != real.SIZE:
        size_config(size)


def check_name(name: str, size: str = "tiny") -> None:
    """ZooError unless ``name`` is a base or an organism of zoo ``size`` (real-tier names, ``smollm2...``,
    belong to ``real`` whatever the size); builds nothing."""
    if real.is_real(name) or size == real.SIZE:
        real.check_name(name)
        return
    _check_name(name, size_config(size))


def _is_current(path: Path, fingerprint: str) -> bool:
    meta = read_meta(path)
    return meta is not None and meta.get("fingerprint") == fingerprint


def build_order(names: list[str], cfg: SizeConfig) -> list[str]:
    """``names`` without repeats, with the drift control each ``-drift`` / ``-natural`` organism is built from
    added where missing, the controls first (``ValueError`` for an unknown name)."""
    parsed = [parse_name(n, n_layers_by_base(cfg)) for n in names if n not in BASES]
    controls = sorted({drift_control(r) for r in parsed if r.drift or r.natural})
    return sorted(dict.fromkeys([*controls, *names]), key=lambda n: n not in DRIFT_CONTROLS)


def needed_bases(names: list[str], cfg: SizeConfig) -> set[str]:
    """The bases that building ``names`` needs: their own, and ``base`` for ``base-fmt`` (trained on from it)
    and for ``base-large`` (its specification reads ``base``'s recall)."""
    bases = {_check_name(n, cfg) for n in names} | {n for n in names if n in BASES}
    return bases | ({"base"} if bases & {SURFACING_BASE, "base-large"} else set())


def build(
    names: Iterable[str] | None = None, size: str = "tiny", force: bool = False, log: Log = print
) -> list[Path]:
    """Build (or reuse) organisms and the bases they need; return their directories.

    ``names=None`` builds ``DEFAULT_ORGANISMS`` plus both bases. ``force`` rebuilds the named
    artifacts (bases only when named). Unknown names raise ``ValueError`` before any work.
    ``size="real"`` builds the real-weight tier (``alignloc.zoo.real``).
    """
    if size == real.SIZE:
        return realdisk.build(list(names) if names is not None else None, force=force, log=log)
    cfg = size_config(size)
    names = build_order(list(DEFAULT_ORGANISMS) + [DRIFT_CONTROL] + HARD_ORGANISMS + ["base-large"]
                        if names is None else list(names), cfg)
    bases = needed_bases(names, cfg)
    root = zoo_root() / size
    world = make_world(cfg.world)
    t0 = time.time()
    out = []
    sweep_stale(root)
    with quiet():
        for which in BASES:
            if which not in bases:
                continue
            path = root / which
            if _is_current(path, base_fingerprint(cfg, which)) and not (force and which in names):
                continue
            if path.exists():
                log(f"[zoo:{size}] {which} is stale or forced; rebuilding")
            build_base(which, cfg, world, base_tokenizer(world, which), path, log)
        for name in names:
            path = root / name
            out.append(path)
            if name in BASES:
                continue
            base_sha = read_meta(root / _check_name(name, cfg))["weights_sha256"]
            if _is_current(path, organism_fingerprint(cfg, name, base_sha, root)) and not force:
                continue
            build_organism(name, cfg, world, root, log)
    log(f"[zoo:{size}] ready: {len(out)} artifact(s) in {root} ({time.time() - t0:.0f}s)")
    return out


def _entry(name: str, path: Path) -> ZooEntry:
    meta = read_meta(path) or {}
    if name in BASES:
        return ZooEntry(
            name=name,
            path=path,
            base=path / "model",
            tuned=None,
            ground_truth=meta,
            prompts=prompt_map(path),
        )
    return ZooEntry(
        name=name,
        path=path,
        base=path / "base",
        tuned=path / "tuned",
        ground_truth=meta,
        prompts=prompt_map(path),
        drift=path / "drift" if meta.get("drift") else None,
    )


def resolve(name: str, size: str = "tiny", build_missing: bool = True) -> ZooEntry:
    """Find a built organism (building it if allowed); unknown names raise ``ValueError``.

    Real-tier names (``smollm2...``) resolve in the ``real`` tier whatever ``size`` says."""
    if real.is_real(name) or size == real.SIZE:
        return realdisk.resolve(name, build_missing)
    cfg = size_config(size)
    base = _check_name(name, cfg)
    root = zoo_root() / size
    path = root / name
    base_meta = read_meta(root / base)
    fp = (
        base_fingerprint(cfg, name)
        if name in BASES
        else organism_fingerprint(cfg, name, base_meta["weights_sha256"], root)
        if base_meta
        else None
    )
    if fp is None or not _is_current(path, fp):
        if not build_missing:
            raise FileNotFoundError(
                f"zoo organism {name!r} (size {size}) is not built (or is stale) under {root}; "
                f"run `alignloc zoo build {name} --size {size}` or call "
                f"alignloc.zoo.build([{name!r}], size={size!r})"
            )
        build([name], size=size)
    return _entry(name, path)


def recipe_tokenizer(name: str, size: str = "tiny"):
    """The tokenizer a synthetic-tier model would be saved with, made from its recipe's word list
    without building it (an organism keeps its base's); None for a real-tier model."""
    if real.is_real(name) or size == real.SIZE:
        return None
    cfg = size_config(size)
    return base_tokenizer(make_world(cfg.world), _check_name(name, cfg))


def list_organisms(size: str = "tiny") -> list[dict[str, Any]]:
    """Bases, the default organisms and any other built ones, with their measured numbers."""
    if size == real.SIZE:
        return realdisk.list_organisms()
    cfg = size_config(size)
    root = zoo_root() / size
    names = list(BASES) + list(DEFAULT_ORGANISMS) + [DRIFT_CONTROL] + HARD_ORGANISMS
    if root.is_dir():
        names += sorted(
            p.name
            for p in root.iterdir()
            if p.is_dir() and not p.name.startswith(".") and p.name not in names
        )
    out = []
    for name in names:
        try:
            _check_name(name, cfg)
        except ValueError:
            continue
        meta = read_meta(root / name)
        measured = (meta or {}).get("measured", {})
        out.append(
            {
                "name": name,
                "path": str(root / name),
                "built": meta is not None,
                "kind": "base" if name in BASES else "organism",
                "recipe": (meta or {}).get("recipe"),
                "layers": (meta or {}).get("layers", []),
                "behavior": (meta or {}).get("behavior", {}).get("metric") if meta else None,
                "measured": measured,
                # the specification and whether this build met it (``specs``; absent on older builds)
                "spec": (meta or {}).get("spec"),
            }
        )
    return out


__all__ = [
    "BASES",
    "DEFAULT_ORGANISM",
    "DEFAULT_ORGANISMS",
    "DRIFT_CONTROL",
    "SURFACING_ORGANISMS",
    "HARD_ORGANISMS",
    "NATURAL_LARGE_ORGANISMS",
    "NATURAL_ORGANISMS",
    "ZooEntry",
    "build",
    "check_name",
    "list_organisms",
    "resolve",
    "valid_names_hint",
    "weights_sha256",
    "zoo_root",
]
