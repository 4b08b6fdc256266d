"""Surfaced vs installed on a pair: capture the residuals the measure needs, then measure.

The measure itself is pure (``alignloc.analyses.surfacing``); this module gathers its inputs:
last-token ``resid_post`` of base and tuned on the behavior prompts, and of the base on the
*demonstration* prompts, the prompt rows whose ``meta.demo`` is ``behavior`` (one demonstration
in the behavior format, then a behavior prompt) or ``plain`` (the same demonstration in the plain
format), matched by ``meta.pair``. The tuned model's residuals on the demonstrations give its own
behavior direction, to tell scaling (same direction, larger) from rotation.

    result = pair_surfacing(pair, prompts, "acts/")   # the zoo's validation: alignloc.experiments.surfacing
"""

from __future__ import annotations

from pathlib import Path

import torch

from alignloc.analyses.surfacing import SurfacingConfig, cosine, surfacing_by_layer
from alignloc.capturing import capture
from alignloc.layerdiff.collect import stacked
from alignloc.models.pair import ModelPair
from alignloc.prompts import Prompt

DEMO_CLASSES = ("behavior", "plain")


def split_demos(prompts: list[Prompt]) -> tuple[list[Prompt], list[Prompt]]:
    """(demonstration rows with ``meta.demo``, every other prompt)."""
    demos = [p for p in prompts if p.meta.get("demo") in DEMO_CLASSES]
    return demos, [p for p in prompts if p.meta.get("demo") not in DEMO_CLASSES]


def matched_demos(demos: list[Prompt]) -> tuple[list[Prompt], list[Prompt]]:
    """The ``behavior`` and ``plain`` demonstrations paired by ``meta.pair`` (same order);
    ValueError if no pair is complete."""
    plain = {p.meta.get("pair", p.id): p for p in demos if p.meta["demo"] == "plain"}
    beh = [p for p in demos if p.meta["demo"] == "behavior" and p.meta.get("pair", p.id) in plain]
    if not beh:
        raise ValueError("no demonstration pair: rows with meta.demo = 'behavior' and 'plain' must share meta.pair")
    return beh, [plain[p.meta.get("pair", p.id)] for p in beh]


def demo_residuals(pair: ModelPair, demos: list[Prompt], store_dir: str | Path, batch_size: int = 16,
                   backend: str = "hf", overwrite: bool = False) -> dict[str, torch.Tensor]:
    """``{"<side>_<class>": [layer, m, d]}`` last-token ``resid_post`` on the matched demonstrations."""
    beh, plain = matched_demos(demos)
    store = capture(pair, beh + plain, store_dir, sites="resid_post", positions="last", batch_size=batch_size,
                    backend=backend, overwrite=overwrite)
    m = len(beh)
    out = {}
    for side in ("base", "tuned"):
        h = stacked(store, side, "resid_post")  # [layer, 2m, d]
        out[f"{side}_behavior"], out[f"{side}_plain"] = h[:, :m], h[:, m:]
    return out


def surfacing_measures(h_base: torch.Tensor, h_tuned: torch.Tensor, demo: dict[str, torch.Tensor],
                       cfg: SurfacingConfig | None = None, h_control: torch.Tensor | None = None) -> dict:
    """``surfacing_by_layer`` plus, per layer, the cosine of the tuned model's own in-context behavior
    direction with the base's and their norm ratio (scaling vs rotation). Inputs ``[layer, n, d]``."""
    res = surfacing_by_layer(h_base, h_tuned, demo["base_behavior"], demo["base_plain"], cfg, h_control)
    for i, row in enumerate(res["layers"]):
        gb = (demo["base_behavior"][i] - demo["base_plain"][i]).double().mean(0)
        gt = (demo["tuned_behavior"][i] - demo["tuned_plain"][i]).double().mean(0)
        row["tuned_direction_cosine"] = cosine(gt, gb)
        row["tuned_direction_norm_ratio"] = float(gt.norm() / gb.norm().clamp_min(1e-12))
    res["n_behavior"], res["n_demo_pairs"] = int(h_base.shape[1]), int(demo["base_behavior"].shape[1])
    return res


def pair_surfacing(pair: ModelPair, prompts: list[Prompt], store_dir: str | Path, cfg: SurfacingConfig | None = None,
                   batch_size: int = 16, overwrite: bool = False) -> dict:
    """Capture and measure one pair on ``prompts`` (its ``behavior`` rows and its demonstration rows)."""
    demos, rest = split_demos(prompts)
    beh = [p for p in rest if p.kind == "behavior"]
    if not beh:
        raise ValueError("no behavior prompts (kind 'behavior') to measure the tuned shift on")
    store_dir = Path(store_dir)
    demo = demo_residuals(pair, demos, store_dir / "demos", batch_size, overwrite=overwrite)
    store = capture(pair, beh, store_dir / "behavior", sites="resid_post", positions="last", batch_size=batch_size,
                    overwrite=overwrite)
    hb, ht = stacked(store, "base", "resid_post"), stacked(store, "tuned", "resid_post")
    return surfacing_measures(hb, ht, demo, cfg)
