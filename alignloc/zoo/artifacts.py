"""One zoo artifact, built: a base (pretrained on the world) or an organism (a post-training
recipe on its base), measured on the saved checkpoints and installed atomically, with the
fingerprint that tells ``registry`` whether a built one is current."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
import transformers

from alignloc.zoo.config import ZOO_FORMAT, SizeConfig
from alignloc.zoo.dispatch import OWN_SPEC, train_organism
from alignloc.zoo.evaluate import correct_ids, load, mean_target_logprob, measure
from alignloc.zoo.files import copy_tokenizer, install, tmp_dir, weights_sha256, write_prompts
from alignloc.zoo.fmtorgs import (
    MARKER_WORDS,
    SURFACING_BASE,
    SURFACING_ORGANISMS,
    format_base,
    format_sets,
)
from alignloc.zoo.formats import FORMAT_BASES, FORMAT_WORDS, format_prompts, formats_corpus
from alignloc.zoo.names import ZooError, drift_control, parse_name
from alignloc.zoo.pretrain import pretrain
from alignloc.zoo.promptsets import split_entities, standard_sets
from alignloc.zoo.provenance import thread_override, training_code_hash
from alignloc.zoo.specs import MAX_ATTEMPTS, SEED_STRIDE, check, missed, spec_for
from alignloc.zoo.tokenizer import build_tokenizer
from alignloc.zoo.training import THREADS
from alignloc.zoo.world import World, vocabulary

BASES = ("base", "base-large", *FORMAT_BASES, SURFACING_BASE)  # base-formats*: answer formats (formats.py); base-fmt: rare-format QA documents (fmtorgs.py)
DRIFT_CONTROL = "control-drift"
DRIFT_CONTROLS = (DRIFT_CONTROL, f"{DRIFT_CONTROL}-large")  # the drift of each base, built before what needs it
Log = Callable[[str], None]


def _hash(*parts: Any) -> str:
    # the code that trains (provenance), and a thread override when one is set: a cache never serves
    # what the current code and settings would not build
    override = [] if thread_override() is None else [f"threads={thread_override()}"]
    blob = json.dumps([ZOO_FORMAT, THREADS, training_code_hash(), *override, *parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def n_layers_by_base(cfg: SizeConfig) -> dict[str, int]:
    """Each base's depth at this size (organism names carry layer numbers checked against it)."""
    return {b: (cfg.large if b.endswith("large") else cfg.base).n_layers for b in BASES}


def _specs(cfg: SizeConfig, which: str):
    """(model spec, pretraining spec) of a base: the large ones for ``*-large`` (base-formats*:
    ``formats.base_epochs`` / ``formats.large_epochs`` passes; base-fmt shares base's)."""
    if which in FORMAT_BASES:
        large = which.endswith("large")
        spec, train = (cfg.large, cfg.large_train) if large else (cfg.base, cfg.base_train)
        return spec, replace(train, epochs=cfg.formats.large_epochs if large else cfg.formats.base_epochs)
    return (cfg.large, cfg.large_train) if which.endswith("large") else (cfg.base, cfg.base_train)


def base_tokenizer(world: World, which: str):
    """A base's tokenizer: the world's words, plus the answer-format words for base-formats* or the
    two format markers for base-fmt (appended: the other ids are unchanged)."""
    extra = list(FORMAT_WORDS) if which in FORMAT_BASES else list(MARKER_WORDS) if which == SURFACING_BASE else []
    return build_tokenizer(vocabulary(world) + extra)


def _meta_file(path: Path) -> Path:
    return path / ("info.json" if path.name in BASES else "ground_truth.json")


def read_meta(path: Path) -> dict[str, Any] | None:
    """A built artifact's ``info.json`` / ``ground_truth.json``; None if absent or unreadable."""
    f = _meta_file(path)
    try:
        return json.loads(f.read_text())
    except (OSError, json.JSONDecodeError):
        return None


# ---- bases ---------------------------------------------------------------------------------------


def base_fingerprint(cfg: SizeConfig, which: str) -> str:
    """What a base's build depends on (config, world, training spec, seed, zoo format), hashed."""
    spec, train = _specs(cfg, which)
    if which == SURFACING_BASE:  # base trained on (fmtorgs.format_base)
        return _hash("base", which, base_fingerprint(cfg, "base"), cfg.surfacing.corpus(), MARKER_WORDS)
    extra = [cfg.formats.shares, cfg.formats.qa_reps, cfg.formats.threads] if which in FORMAT_BASES else []
    return _hash("base", which, asdict(cfg.world), asdict(spec), asdict(train), cfg.seed, *extra)


def build_base(which: str, cfg: SizeConfig, world: World, tok, final: Path, log: Log) -> None:
    """Pretrain base ``which``, measure it, check its specification and install it at ``final`` (atomically)."""
    t0 = time.time()
    spec, tspec = _specs(cfg, which)
    log(
        f"[zoo:{cfg.name}] pretraining {which} ({spec.n_layers} layers, d={spec.d_model}, "
        + (f"base + {cfg.surfacing.pretrain_epochs} passes with QA documents)" if which == SURFACING_BASE
           else f"{tspec.epochs} passes)")
    )
    info = until_spec(which, spec_for(which, "", False, True), cfg, final, log,
                      lambda acfg, tmp: _train_base(which, cfg, acfg, world, tok, final, tmp))
    measured = info["measured"]
    log(
        f"[zoo:{cfg.name}] {which}: recall strong {measured['fact_recall_strong']:.2f} "
        f"weak {measured['fact_recall_weak']:.2f} ({time.time() - t0:.0f}s)"
    )


def _train_base(which: str, cfg: SizeConfig, acfg: SizeConfig, world: World, tok, final: Path, tmp: Path) -> dict:
    """One attempt at a base, trained with ``acfg``'s seed into ``tmp``; its ``info.json`` content."""
    t0 = time.time()
    spec, tspec = _specs(cfg, which)
    sets, corpus = standard_sets(world, cfg.recipes.refusal_topic), {}
    if which in FORMAT_BASES:  # the world corpus plus answers in three formats
        sets = {"knowledge": sets["knowledge"], "formats": format_prompts(split_entities(world)[1])}
        corpus = {"segments": formats_corpus(cfg.formats.shares, cfg.formats.qa_reps), "threads": cfg.formats.threads}
    fmt = which == SURFACING_BASE
    if fmt:
        base = load(final.parent / "base" / "model")[0]
        model, record = format_base(base, tok, world, cfg.surfacing, tspec.batch_size, acfg.seed + 8)
        corpus = {"threads": cfg.surfacing.threads}
    else:
        model, record = pretrain(world, tok, spec, tspec, seed=acfg.seed, **corpus)
    model.save_pretrained(tmp / "model")
    tok.save_pretrained(tmp / "model")
    if fmt:  # the rare format's marker: its rate on QA prompts, and after one demonstration
        sets |= {k: v for k, v in format_sets(world, "surfaced", cfg.recipes.refusal_topic, cfg.seed).items()
                 if k in ("format", "demos")}
    prompts = write_prompts(tmp, sets)
    return {
        "name": which,
        "size": cfg.name,
        "kind": "base",
        "arch": spec.arch,
        "n_layers": spec.n_layers,
        "model": "model",
        "prompts": prompts,
        "measured": measure(*load(tmp / "model"), sets),
        "train": record,
        "world": asdict(cfg.world),
        **({"formats": asdict(cfg.formats)} if which in FORMAT_BASES else {}),
        "seed": cfg.seed,
        "threads": thread_override() or corpus.get("threads", THREADS),
        "weights_sha256": weights_sha256(tmp / "model"),
        "fingerprint": base_fingerprint(cfg, which),
        "zoo_format": ZOO_FORMAT,
        "versions": _versions(),
        "build_seconds": round(time.time() - t0, 1),
    }


def _versions() -> dict[str, str]:
    """The library versions and the CPU kernel set a build ran with (recorded, not fingerprinted)."""
    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "training_code": training_code_hash()}


def until_spec(name: str, requirements: list[str], cfg: SizeConfig, final: Path, log: Log,
               attempt: Callable[[SizeConfig, Path], dict]) -> dict:
    """Train ``name`` with the configured seed and, while it misses ``requirements``, the next ones
    (``specs.MAX_ATTEMPTS`` in all); install the first that meets them at ``final`` with the check in
    its metadata (``spec``). ``attempt(acfg, tmp)`` writes one try into ``tmp`` and returns its
    metadata. ``ZooError`` naming what was missed if no seed meets the specification."""
    others = lambda n: (read_meta(final.parent / n) or {}).get("measured")  # noqa: E731
    for k in range(MAX_ATTEMPTS):
        acfg = replace(cfg, seed=cfg.seed + SEED_STRIDE * k)
        tmp = tmp_dir(final)
        try:
            meta = attempt(acfg, tmp)
            checks = check(requirements, meta["measured"], others)
            meta["spec"] = {"met": all(c.ok for c in checks), "requirements": [c.to_json() for c in checks],
                            "attempt": k + 1, "training_seed": acfg.seed, "max_attempts": MAX_ATTEMPTS}
            if meta["spec"]["met"]:
                (tmp / _meta_file(final).name).write_text(json.dumps(meta, indent=2))
                install(tmp, final, log)
                return meta
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log(f"[zoo:{cfg.name}] {name} missed its specification with training seed {acfg.seed}: {missed(checks)}"
            + ("; training again with the next seed" if k + 1 < MAX_ATTEMPTS else ""))
    seeds = ", ".join(str(cfg.seed + SEED_STRIDE * k) for k in range(MAX_ATTEMPTS))
    raise ZooError(
        f"zoo artifact {name!r} (size {cfg.name}) missed its specification with each of {MAX_ATTEMPTS} training "
        f"seeds ({seeds}); last: {missed(checks)}. Nothing was installed: the recipe needs more margin "
        "(alignloc/zoo/specs.py lists the requirements, alignloc/zoo/config.py the budgets)"
    )



# ---- organisms -----------------------------------------------------------------------------------


def organism_fingerprint(cfg: SizeConfig, name: str, base_sha: str, root: Path) -> str | None:
    """The build fingerprint; None if a dependency (the drift control of a ``-drift`` or ``-natural`` organism) is
    not built."""
    parts: list[Any] = ["organism", name, asdict(cfg.recipes), asdict(cfg.world), cfg.seed, base_sha]
    if name in SURFACING_ORGANISMS:
        parts.append(asdict(cfg.surfacing))
    parsed = parse_name(name, n_layers_by_base(cfg))
    on_drift = parsed.drift or parsed.natural
    if name in DRIFT_CONTROLS or on_drift:
        parts.append(asdict(cfg.drift))
    recipe = parse_name(name, n_layers_by_base(cfg)).recipe
    if recipe in OWN_SPEC:  # only these organisms' fingerprints include their own spec
        parts.append(asdict(getattr(cfg, OWN_SPEC[recipe])))
    if on_drift:
        dep = read_meta(root / drift_control(parsed))
        if dep is None:
            return None
        parts += [dep["weights_sha256"], "drift-organism-2"]  # 2: records the behavior target log-prob per side
    return _hash(*parts)


def build_organism(name: str, cfg: SizeConfig, world: World, root: Path, log: Log) -> None:
    """Post-train organism ``name`` on its base, measure both sides, check its specification and
    install it under ``root`` (atomically)."""
    t0 = time.time()
    parsed = parse_name(name, n_layers_by_base(cfg))
    log(f"[zoo:{cfg.name}] building {name} on {parsed.base}")
    requirements = spec_for(name, parsed.recipe, parsed.drift or parsed.natural, False)
    gt = until_spec(name, requirements, cfg, root / name, log,
                    lambda acfg, tmp: _train_organism(name, cfg, acfg, world, root, tmp))
    measured, beh = gt["measured"], gt["behavior"].get("metric")
    msg = f"{beh} {measured['base'].get(beh, 0):.2f} -> {measured['tuned'].get(beh, 0):.2f}, " if beh else ""
    log(
        f"[zoo:{cfg.name}] {name}: {msg}recall strong {measured['tuned']['fact_recall_strong']:.2f} "
        f"({time.time() - t0:.0f}s)"
    )


def _train_organism(name: str, cfg: SizeConfig, acfg: SizeConfig, world: World, root: Path, tmp: Path) -> dict:
    """One attempt at organism ``name``, trained with ``acfg``'s seed into ``tmp``; its ground truth."""
    t0 = time.time()
    parsed = parse_name(name, n_layers_by_base(cfg))
    base_dir = root / parsed.base / "model"
    base_sha = read_meta(root / parsed.base)["weights_sha256"]
    final = root / name
    base, tok = load(base_dir)
    drift_model = load(root / drift_control(parsed) / "tuned")[0] if parsed.drift or parsed.natural else None
    org = train_organism(parsed, base, tok, world, acfg, log=None, drift_model=drift_model)
    shutil.copytree(base_dir, tmp / "base")
    org.tuned.save_pretrained(tmp / "tuned")
    copy_tokenizer(base_dir, tmp / "tuned")
    if org.drift_only is not None:
        org.drift_only.save_pretrained(tmp / "drift")
        copy_tokenizer(base_dir, tmp / "drift")
    if org.adapter is not None:
        org.adapter.save_pretrained(tmp / "adapter")
        copy_tokenizer(base_dir, tmp / "adapter")
        acfg_file = tmp / "adapter" / "adapter_config.json"
        data = json.loads(acfg_file.read_text())
        data["base_model_name_or_path"] = str((final / "base").resolve())
        acfg_file.write_text(json.dumps(data, indent=2))
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
    return {
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
        "threads": thread_override() or (cfg.formats.threads if parsed.recipe == "rl-formats" else
                                         cfg.surfacing.threads if name in SURFACING_ORGANISMS else THREADS),
        "fingerprint": organism_fingerprint(cfg, name, base_sha, root),
        "zoo_format": ZOO_FORMAT,
        "versions": _versions(),
        "build_seconds": round(time.time() - t0, 1),
    }
