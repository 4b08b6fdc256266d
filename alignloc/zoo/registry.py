"""The zoo on disk: build (atomically, with reuse), resolve and list organisms.

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

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
import transformers

from alignloc.zoo import real
from alignloc.zoo.config import ZOO_FORMAT, SizeConfig, size_config
from alignloc.zoo.entry import ZooEntry, zoo_root
from alignloc.zoo.evaluate import correct_ids, load, mean_target_logprob, measure
from alignloc.zoo.files import (
    copy_tokenizer,
    install,
    prompt_map,
    quiet,
    sweep_stale,
    tmp_dir,
    weights_sha256,
    write_prompts,
)
from alignloc.zoo.fmtorgs import (
    MARKER_WORDS,
    SURFACING_BASE,
    SURFACING_ORGANISMS,
    format_base,
    format_sets,
    format_sft,
)
from alignloc.zoo.formats import FORMAT_BASES, FORMAT_WORDS, format_prompts, formats_corpus
from alignloc.zoo.lima import chat_lima
from alignloc.zoo.names import parse_name, valid_names_hint
from alignloc.zoo.pretrain import pretrain
from alignloc.zoo.promptsets import split_entities, standard_sets
from alignloc.zoo.recipes import run_recipe
from alignloc.zoo.rl import rl_formats
from alignloc.zoo.tokenizer import build_tokenizer
from alignloc.zoo.training import THREADS
from alignloc.zoo.world import World, make_world, vocabulary

BASES = ("base", "base-large", *FORMAT_BASES, SURFACING_BASE)  # base-formats*: answer formats (formats.py); base-fmt: rare-format QA documents (fmtorgs.py)
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
# The hard tier: the confined edits again, under a drift that moves every layer (drift.py)
HARD_ORGANISMS = [
    "chat-sft-upper-drift",
    "chat-sft-lower-drift",
    "refusal-lora-L1-drift",
    "refusal-lora-L2-drift",
    "fact-edit-L1-drift",
]
DRIFT_CONTROL = "control-drift"
# organisms built by their own module (not recipes.run_recipe) and fingerprinted with their own spec
OWN_RECIPES = {"rl-formats": rl_formats, "chat-lima": chat_lima}
OWN_SPEC = {"rl-formats": "formats", "chat-lima": "lima"}
DEFAULT_ORGANISM = "chat-sft-upper"
Log = Callable[[str], None]




def _hash(*parts: Any) -> str:
    blob = json.dumps([ZOO_FORMAT, THREADS, *parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _n_layers(cfg: SizeConfig) -> dict[str, int]:
    return {b: (cfg.large if b.endswith("large") else cfg.base).n_layers for b in BASES}


def _specs(cfg: SizeConfig, which: str):
    """(model spec, pretraining spec) of a base: the large ones for ``*-large`` (base-formats*:
    ``formats.base_epochs`` / ``formats.large_epochs`` passes; base-fmt shares base's)."""
    if which in FORMAT_BASES:
        large = which.endswith("large")
        spec, train = (cfg.large, cfg.large_train) if large else (cfg.base, cfg.base_train)
        return spec, replace(train, epochs=cfg.formats.large_epochs if large else cfg.formats.base_epochs)
    return (cfg.large, cfg.large_train) if which.endswith("large") else (cfg.base, cfg.base_train)


def _tokenizer(world: World, which: str):
    """A base's tokenizer: the world's words, plus the answer-format words for base-formats* or the
    two format markers for base-fmt (appended: the other ids are unchanged)."""
    extra = list(FORMAT_WORDS) if which in FORMAT_BASES else list(MARKER_WORDS) if which == SURFACING_BASE else []
    return build_tokenizer(vocabulary(world) + extra)


def _meta_file(path: Path) -> Path:
    return path / ("info.json" if path.name in BASES else "ground_truth.json")


def _read_meta(path: Path) -> dict[str, Any] | None:
    f = _meta_file(path)
    try:
        return json.loads(f.read_text())
    except (OSError, json.JSONDecodeError):
        return None


# ---- bases ---------------------------------------------------------------------------------------


def _base_fingerprint(cfg: SizeConfig, which: str) -> str:
    spec, train = _specs(cfg, which)
    if which == SURFACING_BASE:  # base trained on (fmtorgs.format_base)
        return _hash("base", which, _base_fingerprint(cfg, "base"), cfg.surfacing.corpus(), MARKER_WORDS)
    extra = [cfg.formats.shares, cfg.formats.qa_reps, cfg.formats.threads] if which in FORMAT_BASES else []
    return _hash("base", which, asdict(cfg.world), asdict(spec), asdict(train), cfg.seed, *extra)


def _build_base(which: str, cfg: SizeConfig, world: World, tok, final: Path, log: Log) -> None:
    t0 = time.time()
    spec, tspec = _specs(cfg, which)
    sets, corpus = standard_sets(world, cfg.recipes.refusal_topic), {}
    if which in FORMAT_BASES:  # the world corpus plus answers in three formats
        sets = {"knowledge": sets["knowledge"], "formats": format_prompts(split_entities(world)[1])}
        corpus = {"segments": formats_corpus(cfg.formats.shares, cfg.formats.qa_reps), "threads": cfg.formats.threads}
    log(
        f"[zoo:{cfg.name}] pretraining {which} ({spec.n_layers} layers, d={spec.d_model}, "
        + (f"base + {cfg.surfacing.pretrain_epochs} passes with QA documents)" if which == SURFACING_BASE
           else f"{tspec.epochs} passes)")
    )
    tmp = tmp_dir(final)
    try:
        fmt = which == SURFACING_BASE
        if fmt:
            base = load(final.parent / "base" / "model")[0]
            model, record = format_base(base, tok, world, cfg.surfacing, tspec.batch_size, cfg.seed + 8)
            corpus = {"threads": cfg.surfacing.threads}
        else:
            model, record = pretrain(world, tok, spec, tspec, seed=cfg.seed, **corpus)
        model.save_pretrained(tmp / "model")
        tok.save_pretrained(tmp / "model")
        if fmt:  # the rare format's marker: its rate on QA prompts, and after one demonstration
            sets |= {k: v for k, v in format_sets(world, "surfaced", cfg.recipes.refusal_topic, cfg.seed).items()
                     if k in ("format", "demos")}
        prompts = write_prompts(tmp, sets)
        measured = measure(*load(tmp / "model"), sets)
        info = {
            "name": which,
            "size": cfg.name,
            "kind": "base",
            "arch": spec.arch,
            "n_layers": spec.n_layers,
            "model": "model",
            "prompts": prompts,
            "measured": measured,
            "train": record,
            "world": asdict(cfg.world),
            **({"formats": asdict(cfg.formats)} if which in FORMAT_BASES else {}),
            "seed": cfg.seed,
            "threads": corpus.get("threads", THREADS),
            "weights_sha256": weights_sha256(tmp / "model"),
            "fingerprint": _base_fingerprint(cfg, which),
            "zoo_format": ZOO_FORMAT,
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
            "build_seconds": round(time.time() - t0, 1),
        }
        (tmp / "info.json").write_text(json.dumps(info, indent=2))
        install(tmp, final, log)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(
        f"[zoo:{cfg.name}] {which}: recall strong {measured['fact_recall_strong']:.2f} "
        f"weak {measured['fact_recall_weak']:.2f} ({time.time() - t0:.0f}s)"
    )



# ---- organisms -----------------------------------------------------------------------------------


def _organism_fingerprint(cfg: SizeConfig, name: str, base_sha: str, root: Path) -> str | None:
    """The build fingerprint; None if a dependency (``control-drift`` for ``-drift``) is not built."""
    parts: list[Any] = ["organism", name, asdict(cfg.recipes), asdict(cfg.world), cfg.seed, base_sha]
    if name in SURFACING_ORGANISMS:
        parts.append(asdict(cfg.surfacing))
    if name == DRIFT_CONTROL or parse_name(name, _n_layers(cfg)).drift:
        parts.append(asdict(cfg.drift))
    recipe = parse_name(name, _n_layers(cfg)).recipe
    if recipe in OWN_SPEC:  # only these organisms' fingerprints include their own spec
        parts.append(asdict(getattr(cfg, OWN_SPEC[recipe])))
    if parse_name(name, _n_layers(cfg)).drift:
        dep = _read_meta(root / DRIFT_CONTROL)
        if dep is None:
            return None
        parts += [dep["weights_sha256"], "drift-organism-2"]  # 2: records the behavior target log-prob per side
    return _hash(*parts)


def _build_organism(name: str, cfg: SizeConfig, world: World, root: Path, log: Log) -> None:
    t0 = time.time()
    parsed = parse_name(name, _n_layers(cfg))
    base_dir = root / parsed.base / "model"
    base_sha = _read_meta(root / parsed.base)["weights_sha256"]
    final = root / name
    log(f"[zoo:{cfg.name}] building {name} on {parsed.base}")
    tmp = tmp_dir(final)
    try:
        base, tok = load(base_dir)
        drift_model = load(root / DRIFT_CONTROL / "tuned")[0] if parsed.drift else None
        if parsed.recipe in OWN_RECIPES:  # built outside recipes.py (they build on its Organism)
            org = OWN_RECIPES[parsed.recipe](base, tok, world, cfg, name, log=None)
        elif name in SURFACING_ORGANISMS:
            org = format_sft(base, tok, world, cfg, parsed.recipe.removeprefix("format-"), name)
        else:
            org = run_recipe(parsed, base, tok, world, cfg, log=None, drift_model=drift_model)
        shutil.copytree(base_dir, tmp / "base")
        org.tuned.save_pretrained(tmp / "tuned")
        copy_tokenizer(base_dir, tmp / "tuned")
        if org.drift_only is not None:
            org.drift_only.save_pretrained(tmp / "drift")
            copy_tokenizer(base_dir, tmp / "drift")
        if org.adapter is not None:
            org.adapter.save_pretrained(tmp / "adapter")
            copy_tokenizer(base_dir, tmp / "adapter")
            acfg = tmp / "adapter" / "adapter_config.json"
            data = json.loads(acfg.read_text())
            data["base_model_name_or_path"] = str((final / "base").resolve())
            acfg.write_text(json.dumps(data, indent=2))
        prompts = write_prompts(tmp, org.prompts)
        sets = {
            **standard_sets(world, cfg.recipes.refusal_topic),
            **org.prompts,
        }  # every metric, shipped sets take precedence
        mb, tb = load(tmp / "base"), load(tmp / "tuned")
        measured = {"base": measure(*mb, sets), "tuned": measure(*tb, sets)}
        known_b = correct_ids(*mb, sets["knowledge"])
        known_t = correct_ids(*tb, sets["knowledge"])
        measured["base"]["retention"] = 1.0
        measured["tuned"]["retention"] = round(len(known_b & known_t) / max(1, len(known_b)), 4)
        if org.drift_only is not None:
            md = load(tmp / "drift")
            measured["drift_only"] = measure(*md, sets)
            known_d = correct_ids(*md, sets["knowledge"])
            measured["drift_only"]["retention"] = round(len(known_b & known_d) / max(1, len(known_b)), 4)
            # how near zero the drift's own behavior effect is, in nats (teacher-forced targets)
            beh = org.prompts[Path(org.behavior["prompts"]).stem]
            for side, m in (("base", mb), ("tuned", tb), ("drift_only", md)):
                measured[side]["behavior_target_logprob"] = round(mean_target_logprob(*m, beh), 4)
        gt = {
            "name": name,
            "recipe": org.recipe,
            "layers": org.layers,
            "modules": org.modules,
            "behavior": org.behavior,
            "knowledge": org.knowledge,
            "prompts": prompts,
            "measured": measured,
            "seed": cfg.seed,
            "size": cfg.name,
            "base_model": parsed.base,
            "arch": base.config.model_type,
            "n_layers": base.config.num_hidden_layers,
            "weights_sha256": weights_sha256(tmp / "tuned"),
            "base_weights_sha256": base_sha,
            "adapter": "adapter" if org.adapter is not None else None,
            "drift": "drift" if org.drift_only is not None else None,
            "extra": org.extra,
            "threads": (cfg.formats.threads if parsed.recipe == "rl-formats" else
                        cfg.surfacing.threads if name in SURFACING_ORGANISMS else THREADS),
            "fingerprint": _organism_fingerprint(cfg, name, base_sha, root),
            "zoo_format": ZOO_FORMAT,
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
            "build_seconds": round(time.time() - t0, 1),
        }
        (tmp / "ground_truth.json").write_text(json.dumps(gt, indent=2))
        install(tmp, final, log)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    beh = org.behavior.get("metric")
    msg = (
        f"{beh} {measured['base'].get(beh, 0):.2f} -> {measured['tuned'].get(beh, 0):.2f}, "
        if beh
        else ""
    )
    log(
        f"[zoo:{cfg.name}] {name}: {msg}recall strong {measured['tuned']['fact_recall_strong']:.2f} "
        f"({time.time() - t0:.0f}s)"
    )


# ---- public API ----------------------------------------------------------------------------------


def _check_name(name: str, cfg: SizeConfig) -> str:
    """The base a name needs; ``ValueError`` with the valid names if unknown."""
    if name in BASES:
        return name
    return parse_name(name, _n_layers(cfg)).base


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
    meta = _read_meta(path)
    return meta is not None and meta.get("fingerprint") == fingerprint


def build(
    names: Iterable[str] | None = None, size: str = "tiny", force: bool = False, log: Log = print
) -> list[Path]:
    """Build (or reuse) organisms and the bases they need; return their directories.

    ``names=None`` builds ``DEFAULT_ORGANISMS`` plus both bases. ``force`` rebuilds the named
    artifacts (bases only when named). Unknown names raise ``ValueError`` before any work.
    ``size="real"`` builds the real-weight tier (``alignloc.zoo.real``).
    """
    if size == real.SIZE:
        return real.build(list(names) if names is not None else None, force=force, log=log)
    cfg = size_config(size)
    names = (
        list(DEFAULT_ORGANISMS) + [DRIFT_CONTROL] + HARD_ORGANISMS + ["base-large"]
        if names is None
        else list(dict.fromkeys(names))
    )
    if any(n not in BASES and parse_name(n, _n_layers(cfg)).drift for n in names) and DRIFT_CONTROL not in names:
        names.insert(0, DRIFT_CONTROL)  # the -drift organisms are built from its drift
    names.sort(key=lambda n: n != DRIFT_CONTROL)
    bases = {b for b in (_check_name(n, cfg) for n in names)} | {n for n in names if n in BASES}
    if SURFACING_BASE in bases:
        bases.add("base")  # base-fmt is trained on from base
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
            if _is_current(path, _base_fingerprint(cfg, which)) and not (force and which in names):
                continue
            if path.exists():
                log(f"[zoo:{size}] {which} is stale or forced; rebuilding")
            _build_base(which, cfg, world, _tokenizer(world, which), path, log)
        for name in names:
            path = root / name
            out.append(path)
            if name in BASES:
                continue
            base_sha = _read_meta(root / _check_name(name, cfg))["weights_sha256"]
            if _is_current(path, _organism_fingerprint(cfg, name, base_sha, root)) and not force:
                continue
            _build_organism(name, cfg, world, root, log)
    log(f"[zoo:{size}] ready: {len(out)} artifact(s) in {root} ({time.time() - t0:.0f}s)")
    return out


def _entry(name: str, path: Path) -> ZooEntry:
    meta = _read_meta(path) or {}
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
        return real.resolve(name, build_missing)
    cfg = size_config(size)
    base = _check_name(name, cfg)
    root = zoo_root() / size
    path = root / name
    base_meta = _read_meta(root / base)
    fp = (
        _base_fingerprint(cfg, name)
        if name in BASES
        else _organism_fingerprint(cfg, name, base_meta["weights_sha256"], root)
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


def list_organisms(size: str = "tiny") -> list[dict[str, Any]]:
    """Bases, the default organisms and any other built ones, with their measured numbers."""
    if size == real.SIZE:
        return real.list_organisms()
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
        meta = _read_meta(root / name)
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
    "ZooEntry",
    "build",
    "check_name",
    "list_organisms",
    "resolve",
    "valid_names_hint",
    "weights_sha256",
    "zoo_root",
]
