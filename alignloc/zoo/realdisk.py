"""The real-weight tier on disk: build (atomically; reused while the fingerprint holds), resolve
and list ``alignloc.zoo.real``'s organisms, laid out as the synthetic zoo's (``registry``)."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from alignloc.zoo.real import (
    BASE,
    DEPENDS,
    ORGANISMS,
    SIZE,
    SPEC,
    Log,
    check_name,
    fetch_base,
    measure,
    prompt_sets,
    run,
)
from alignloc.zoo.realchain import CHAIN, CHAIN_SPEC, chain_measure


def _root() -> Path:
    from alignloc.zoo.entry import zoo_root

    return zoo_root() / SIZE


def _meta(path: Path) -> dict | None:
    f = path / ("info.json" if path.name == BASE else "ground_truth.json")
    try:
        return json.loads(f.read_text())
    except (OSError, json.JSONDecodeError):
        return None


SPEC_FIELDS = {"format-upper": ("format_layers", "sft_lr", "sft_epochs"),
               "refusal-lora": ("lora_layer", "lora_rank", "lora_lr", "lora_epochs"),
               "control-drift": ("drift_lr", "drift_statements", "drift_epochs")}


def _spec_used(name: str) -> dict:
    """The ``SPEC`` fields an organism's build reads (so a change to one recipe's budget rebuilds only it)."""
    spec = asdict(SPEC)
    keys = ["batch_size", "seed"] + [k for part, ks in SPEC_FIELDS.items() if part in name for k in ks]
    return {k: spec[k] for k in keys}


def _fingerprint(name: str) -> str | None:
    from alignloc.zoo.config import ZOO_FORMAT, DriftSpec
    from alignloc.zoo.provenance import training_code_hash

    base = _meta(_root() / BASE)
    if base is None:
        return None
    parts: list[Any] = [ZOO_FORMAT, name, _spec_used(name), base["weights_sha256"], training_code_hash(real=True)]
    if name in DEPENDS:
        dep = _meta(_root() / DEPENDS[name])
        if dep is None:
            return None
        parts += [dep["weights_sha256"]] + ([asdict(DriftSpec()), "drift-organism-2"] if name.endswith("-drift") else [])
    if name in CHAIN:
        parts += [asdict(CHAIN_SPEC), "chain-1"]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _build_base(log: Log) -> None:
    from alignloc.zoo.evaluate import load
    from alignloc.zoo.files import install, tmp_dir, weights_sha256, write_prompts

    final = _root() / BASE
    tmp = tmp_dir(final)
    try:
        t0 = time.time()
        source = fetch_base(tmp / "model", log)
        write_prompts(tmp, prompt_sets())
        measured = measure(*load(tmp / "model"))
        info = {"name": BASE, "size": SIZE, "kind": "base", "model": "model", **source, "measured": measured,
                "weights_sha256": weights_sha256(tmp / "model"), "build_seconds": round(time.time() - t0, 1)}
        (tmp / "info.json").write_text(json.dumps(info, indent=2))
        install(tmp, final, log)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"[zoo:real] {BASE}: fact recall {measured['fact_recall']:.2f}, format {measured['format_rate']:.2f} "
        f"({time.time() - t0:.0f}s)")


def _build_organism(name: str, log: Log) -> None:
    from alignloc.zoo.evaluate import load, mean_target_logprob
    from alignloc.zoo.files import copy_tokenizer, install, tmp_dir, weights_sha256, write_prompts

    t0 = time.time()
    base_dir = _root() / BASE / "model"
    final = _root() / name
    log(f"[zoo:real] building {name} on {BASE}")
    tmp = tmp_dir(final)
    try:
        base, tok = load(base_dir)
        drift_model = load(_root() / DEPENDS[name] / "tuned")[0] if name in DEPENDS else None
        r = run(name, base, tok, drift_model, log=None)
        (tmp / "base").symlink_to(Path("..") / BASE / "model")  # one copy of the base on disk
        r["tuned"].save_pretrained(tmp / "tuned")
        copy_tokenizer(base_dir, tmp / "tuned")
        for key, sub in (("drift_only", "drift"), ("adapter", "adapter")):
            if r.get(key) is not None:
                r[key].save_pretrained(tmp / sub)
                copy_tokenizer(base_dir, tmp / sub)
        sets = prompt_sets()
        prompts = write_prompts(tmp, sets)
        tuned = load(tmp / "tuned")
        measured = {"base": measure(base, tok), "tuned": measure(*tuned)}
        if name in CHAIN:  # the chain's own rates, on the stage it starts from and on itself
            start = (drift_model, tok) if drift_model is not None else (base, tok)
            measured["start"] = chain_measure(*start)
            measured["tuned"] |= chain_measure(*tuned)
        if r.get("drift_only") is not None:
            drift_only = load(tmp / "drift")
            measured["drift_only"] = measure(*drift_only)
            beh = sets[Path(r["behavior"]["prompts"]).stem]  # the drift's own behavior effect, in nats
            for side, m in (("base", (base, tok)), ("tuned", tuned), ("drift_only", drift_only)):
                measured[side]["behavior_target_logprob"] = round(mean_target_logprob(*m, beh), 4)
        for side in [s for s in measured if s != "base" and "known_facts" in measured[s]]:
            kb, kt = set(measured["base"]["known_facts"]), set(measured[side]["known_facts"])
            measured[side]["retention"] = round(len(kb & kt) / max(1, len(kb)), 4)
        gt = {"name": name, "size": SIZE, "recipe": name.removeprefix(BASE + "-"), "layers": r["layers"],
              "modules": r["modules"], "behavior": r["behavior"],
              "knowledge": {"metric": "fact_recall", "prompts": "prompts/knowledge.jsonl"}, "prompts": prompts,
              "measured": measured, "base_model": BASE, "arch": base.config.model_type,
              "n_layers": base.config.num_hidden_layers, "weights_sha256": weights_sha256(tmp / "tuned"),
              "base_weights_sha256": _meta(_root() / BASE)["weights_sha256"],
              "starts_from": DEPENDS.get(name) if name in CHAIN else None,
              "adapter": "adapter" if r.get("adapter") is not None else None,
              "drift": "drift" if r.get("drift_only") is not None else None, "extra": r["extra"],
              "spec": asdict(SPEC), "fingerprint": _fingerprint(name), "build_seconds": round(time.time() - t0, 1)}
        (tmp / "ground_truth.json").write_text(json.dumps(gt, indent=2))
        install(tmp, final, log)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    beh = r["behavior"].get("metric")
    start = measured.get("start", measured["base"])  # a chain stage's rates are measured on the stage it starts from
    log(f"[zoo:real] {name}: " + (f"{beh} {start[beh]:.2f} -> {measured['tuned'][beh]:.2f}, " if beh else "")
        + f"fact recall {measured['tuned']['fact_recall']:.2f} ({time.time() - t0:.0f}s)")


def _current(name: str) -> bool:
    meta = _meta(_root() / name)
    if name == BASE:
        return meta is not None
    fp = _fingerprint(name)
    return meta is not None and fp is not None and meta.get("fingerprint") == fp


def build(names: list[str] | None = None, force: bool = False, log: Log = print) -> list[Path]:
    """Build (or reuse) real-tier organisms and the base (RealWeightsError if it cannot be had)."""
    names = list(ORGANISMS) if not names else list(dict.fromkeys(names))
    for n in names:
        check_name(n)
    for name in [n for n in names if n in DEPENDS]:
        if DEPENDS[name] not in names:
            names.insert(0, DEPENDS[name])
    names.sort(key=lambda n: n not in DEPENDS.values())  # what others start from is built first
    t0 = time.time()
    if not _current(BASE) or (force and BASE in names):
        _build_base(log)
    out = []
    for name in names:
        out.append(_root() / name)
        if name != BASE and (force or not _current(name)):
            _build_organism(name, log)
    log(f"[zoo:real] ready: {len(out)} artifact(s) in {_root()} ({time.time() - t0:.0f}s)")
    return out


def resolve(name: str, build_missing: bool = True):
    """The ZooEntry of a real-tier name, building it if allowed."""
    from alignloc.zoo.entry import ZooEntry
    from alignloc.zoo.files import prompt_map

    check_name(name)
    if not _current(name):
        if not build_missing:
            raise FileNotFoundError(f"real-tier organism {name!r} is not built under {_root()}; run "
                                    f"`alignloc zoo build {name} --size real`")
        build([name])
    path = _root() / name
    meta = _meta(path) or {}
    if name == BASE:
        return ZooEntry(name=name, path=path, base=path / "model", tuned=None, ground_truth=meta, prompts=prompt_map(path))
    return ZooEntry(name=name, path=path, base=path / "base", tuned=path / "tuned", ground_truth=meta,
                    prompts=prompt_map(path), drift=path / "drift" if meta.get("drift") else None)


def list_organisms() -> list[dict[str, Any]]:
    """The real tier's base and organisms with their measured numbers (built or not)."""
    rows = []
    for name in [BASE, *ORGANISMS]:
        meta = _meta(_root() / name)
        rows.append({"name": name, "path": str(_root() / name), "built": meta is not None,
                     "kind": "base" if name == BASE else "organism", "recipe": (meta or {}).get("recipe"),
                     "layers": (meta or {}).get("layers", []),
                     "behavior": ((meta or {}).get("behavior") or {}).get("metric"), "measured": (meta or {}).get("measured", {})})
    return rows
