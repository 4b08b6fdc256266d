"""The surfaced-vs-installed validation on zoo organisms: the measure (``alignloc.layerdiff.surfacing``,
``alignloc.analyses.surfacing``) where the answer is planted, and where it is not.

    from alignloc.experiments.surfacing import surfacing_experiment
    result = surfacing_experiment("surfacing-acts/")   # the two format organisms (+ chat-sft-upper), ~1 min on CPU
"""

from __future__ import annotations

import time
from pathlib import Path

from alignloc import __version__
from alignloc.analyses.surfacing import SurfacingConfig
from alignloc.layerdiff.surfacing import pair_surfacing, split_demos
from alignloc.models.pair import load_pair
from alignloc.prompts import Prompt
from alignloc.zoo import organism_prompts
from alignloc.zoo.config import size_config
from alignloc.zoo.fmtorgs import demo_prompts
from alignloc.zoo.world import chat_prompt, make_world

EXPERIMENT_KIND = "surfacing-experiment"


def chat_demos(world, behavior: list[Prompt], marker: str, seed: int = 0) -> list[Prompt]:
    """Demonstration rows for the chat organisms (``User: .. Assistant: Sure! v .``), built like the
    format organisms' ones (``zoo.formats.demo_prompts``)."""
    sets = demo_prompts(world, behavior, marker, seed, prompt_fn=chat_prompt)
    return sets["demos"] + sets["demos-plain"]


def organism_surfacing(name: str, out: str | Path, size: str = "tiny", cfg: SurfacingConfig | None = None) -> dict:
    """One zoo organism: its shipped behavior and demonstration prompts (built here for the chat
    organisms, which ship none); records the organism's expected label if it has one."""
    pair = load_pair(f"zoo:{name}")
    prompts = organism_prompts(name, size)
    if not split_demos(prompts)[0]:
        beh = [p for p in prompts if p.kind == "behavior"]
        prompts = prompts + chat_demos(make_world(size_config(size).world), beh, beh[0].meta["marker"].strip())
    res = pair_surfacing(pair, prompts, Path(out) / name, cfg)
    gt = pair.ground_truth or {}
    res["organism"] = name
    res["expected"] = (gt.get("behavior") or {}).get("expected_origin")
    res["measured"] = {side: {k: v for k, v in (gt.get("measured", {}).get(side) or {}).items()
                              if k.startswith(("marker", "demo", "format"))} for side in ("base", "tuned")}
    return res


def surfacing_experiment(out: str | Path, names: tuple[str, ...] = ("format-surfaced", "format-installed"),
                         also: tuple[str, ...] = ("chat-sft-upper",), size: str = "tiny",
                         cfg: SurfacingConfig | None = None) -> dict:
    """The validation experiment: the measure on organisms whose answer is known (``names``) and
    on others whose answer is not (``also``); a JSON-ready result of kind ``surfacing-experiment``
    (``alignloc figures`` draws it). Activations are stored under ``out``."""
    cfg = cfg or SurfacingConfig()
    t0 = time.time()
    results = {n: organism_surfacing(n, out, size, cfg) for n in (*names, *also)}
    return {
        "kind": EXPERIMENT_KIND,
        "alignloc_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "size": size,
        "config": cfg.__dict__.copy(),
        "organisms": results,
        # the measure can affirm surfacing only: an organism is told apart when it reads surfaced exactly if it is
        "separated": {n: (r["verdict"]["label"] == "surfaced") == (r["expected"] == "surfaced")
                      for n, r in results.items() if r["expected"]},
        "seconds": round(time.time() - t0, 1),
    }
