"""layer-diff end to end: collect a pair (and an optional control pair), measure, judge, report.

    report = layer_diff(pair, prompts, "report/")     # also writes index.html, report.json, summary.md

``report`` is the JSON-ready dict of ``report.json``; ``measure(data)`` and ``verdict`` are the
notebook-level entry points when the material is already collected.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import torch

from alignloc import __version__
from alignloc.analyses.verdict import VerdictConfig, verdict
from alignloc.layerdiff.collect import PairData, collect
from alignloc.layerdiff.measures import (
    lens_measures,
    output_measures,
    probe_measures,
    shift_measures,
)
from alignloc.models.pair import LoadedModel, ModelPair, check_pair
from alignloc.prompts import Prompt, prompts_hash

SCHEMA_VERSION = 1
CONTROL_ORGANISM = "control-continued"


def measure(data: PairData, n_boot: int = 1000, seed: int = 0, probes: bool = True) -> dict:
    """All per-layer measurements of one pair (JSON-ready)."""
    m = {
        "weights": data.weights,
        "shift": shift_measures(data, n_boot, seed),
        "lens": lens_measures(data, n_boot, seed),
        "outputs": output_measures(data, n_boot, seed),
    }
    if probes:
        m["probes"] = probe_measures(data, seed)
    return m


def examples(prompts: list[Prompt], per_kind: int = 3) -> list[dict]:
    """The first few prompts of each kind, as shown in the reports."""
    seen: Counter = Counter()
    out = []
    for p in prompts:
        if seen[p.kind] < per_kind:
            seen[p.kind] += 1
            out.append({"id": p.id, "kind": p.kind, "text": p.text, "target": p.target})
    return out


def default_control(pair: ModelPair, size: str = "tiny") -> LoadedModel | None:
    """For a zoo organism: the zoo's continued-pretraining control on the same base, if it exists."""
    if pair.name is None or pair.name == CONTROL_ORGANISM:
        return None
    from alignloc import zoo
    from alignloc.models.pair import load_model

    try:
        entry = zoo.resolve(CONTROL_ORGANISM, size=size)
    except (FileNotFoundError, ValueError):
        return None
    control = load_model(str(entry.tuned))
    control.meta["zoo"] = f"{CONTROL_ORGANISM}:tuned"
    return control if control.weights_hash != pair.base.weights_hash and _same_base(entry, pair) else None


def _same_base(entry, pair: ModelPair) -> bool:
    from alignloc.zoo import weights_sha256

    return weights_sha256(entry.base) == weights_sha256(Path(pair.base.path)) if pair.base.path else False


def layer_diff(
    pair: ModelPair,
    prompts: list[Prompt],
    out: str | Path,
    *,
    control: LoadedModel | None = None,
    store: str | Path | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    probes: bool = True,
    batch_size: int = 16,
    backend: str = "hf",
    config: VerdictConfig | None = None,
    overwrite: bool = False,
    write: bool = True,
    causal: bool = False,
) -> dict:
    """Compare ``pair`` layer by layer on ``prompts``; write the report under ``out`` and return it.

    Activations go to ``store`` (default ``out/acts``) and are reused when it already holds the
    same capture. ``control`` (same base, trained without the edit) sets the noise floors.
    ``causal`` adds grafting, cross-model and within-model patching and attribution
    (``report["causal"]``, see ``alignloc.causal.report``).
    """
    out = Path(out)
    torch.manual_seed(seed)
    data = collect(pair, prompts, store or out / "acts", batch_size, backend, overwrite)
    m = measure(data, n_boot, seed, probes)
    control_block, cm = None, None
    if control is not None:
        cpair = ModelPair(base=pair.base, tuned=control, name="control")
        check_pair(pair.base, control)
        cdata = collect(cpair, prompts, out / "acts-control", batch_size, backend, overwrite)
        cm = measure(cdata, n_boot, seed, probes=False)
        control_block = {"model": control.provenance(), "measures": cm}
    report = {
        "schema_version": SCHEMA_VERSION,
        "alignloc_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "pair": {"name": pair.name, "base": pair.base.provenance(), "tuned": pair.tuned.provenance(),
                 "n_layers": pair.n_layers, "d_model": pair.base.d_model},
        "ground_truth": pair.ground_truth,
        "prompts": {"n": len(prompts), "by_kind": dict(Counter(p.kind for p in prompts)),
                    "sha256": prompts_hash(prompts), "store": str(data.store.root),
                    "examples": examples(prompts)},
        "settings": {"n_boot": n_boot, "seed": seed, "backend": backend, "positions": "last"},
        "measures": m,
        "control": control_block,
        "verdict": verdict(m, cm, config),
    }
    if causal:
        from alignloc.causal.report import causal_report

        report["causal"] = causal_report(pair, prompts, bool(data.store.manifest["bos"]))
    if write:
        from alignloc.report import write_report

        write_report(report, out)
    return report
