"""The stages of `layer-diff --causal` on real-size configs, stage by stage: the earlier engine against today's.

Each ``--models`` entry is a random-weight pair of that configuration (``benchmarks/scale.py``: real
widths, depths and vocabularies; tuned = base + noise on every block). On ``--prompts`` behavior-like
prompts (the real tier's knowledge, chat and refusal questions, each with its target), it runs what
``causal.localize`` and ``causal.report`` run for one prompt kind, twice:

- **earlier engine**: every graft a full forward (windows, profile), the mask's samples one full
  forward each, every layer of the report's extra patch sweeps patched exactly;
- **today's engine**: grafts resumed at their first block from each model's recorded run
  (``causal.resumed``), the mask's samples resumed and stacked into one forward per step
  (``causal.mixed``), the extra sweeps triaged by attribution (``causal.triage``).

Stages: ``windows`` (graft windows of ``--sizes``), ``mask`` (``--mask-steps``), ``profile`` (over the
single-layer ranking), ``patching`` (the report's patch block of the prompts the verdict reads: per-layer
sweeps both ways, the resid_pre grid, attribution) and ``patching other`` (the same block for a prompt
kind the verdict does not read, as `layer-diff` runs it for knowledge and context prompts: there the
tuned-into-base sweeps are triaged too). For each it prints both times, their ratio and the largest
difference between the two engines' numbers where they compute the same thing (windows, profile, the
mask's gates; for the triaged sweeps, the confirmed layers against the full sweep), then the totals and
whether the localization agrees (the single-layer ranking's top layer, the mask's ranking, the
profile's smallest k carrying 80% each way). `layer-diff --causal` runs these stages for the behavior
prompts and the knowledge facts that moved (windows, mask, profile) and patching for each prompt kind.

    python benchmarks/causal.py [--models smollm2-135m,qwen2.5-0.5b,gemma-3-270m] [--prompts 16]
        [--sizes 1,2,4] [--mask-steps 20] [--device cpu]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

STAGES = ("windows", "mask", "profile", "patching", "patching_other")


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def _max_diff(a: list, b: list) -> float:
    """Largest |a - b| over two equal-shaped nested lists, skipping None (cells a triage left out)."""
    if isinstance(a, list):
        return max((_max_diff(x, y) for x, y in zip(a, b, strict=True)), default=0.0)
    return 0.0 if a is None or b is None else abs(a - b)


def _k_at(prof: dict, share: float = 0.8) -> int | None:
    """The profile's smallest k whose mean sufficiency and necessity both reach ``share``."""
    for k, (s, n) in enumerate(zip(prof["sufficiency"]["mean"], prof["necessity"]["mean"], strict=True), 1):
        if s >= share and n >= share:
            return k
    return None


def run(name: str, args, tok) -> dict:
    """Both engines on one config: per-stage seconds, ratios, largest differences and the agreement."""
    import torch
    from scale import build_pair, prompts

    from alignloc.causal.graft import target_metric, window_sweep
    from alignloc.causal.mask import DeltaMask
    from alignloc.causal.profile import concentration_profile, ranking_from_windows
    from alignloc.causal.report import patch_block
    from alignloc.causal.resumed import ResumedScorer

    pair = build_pair(name, tok, args.device)
    ps = [p for p in prompts(args.prompts) if p.target]
    bos, sizes = True, [int(x) for x in args.sizes.split(",")]
    metric = target_metric(ps, None, bos)
    t, diff, out = {"old": {}, "new": {}}, {}, {}

    win_old, t["old"]["windows"] = _timed(lambda: window_sweep(pair, metric, sizes))
    scorers, t_rec = _timed(lambda: (ResumedScorer(pair.base, ps, bos, 8), ResumedScorer(pair.tuned, ps, bos, 8)))
    win_new, t_win = _timed(lambda: window_sweep(pair, metric, sizes, resumed=scorers))
    t["new"]["windows"] = t_rec + t_win  # the recorded runs serve the profile too
    diff["windows"] = max(_max_diff(win_old["windows"][w][k], win_new["windows"][w][k])
                          for w in win_old["windows"] for k in ("sufficiency", "necessity"))

    mask_old, t["old"]["mask"] = _timed(lambda: DeltaMask(steps=args.mask_steps, resume=False, stack=False).fit(pair, ps, bos))
    mask_new, t["new"]["mask"] = _timed(lambda: DeltaMask(steps=args.mask_steps).fit(pair, ps, bos))
    diff["mask"] = float((mask_old.gates_ - mask_new.gates_).abs().max())

    ranking = ranking_from_windows(win_old)
    prof_kw = dict(ranking_source="single-layer grafting", n_boot=100, batch_size=8)
    prof_old, t["old"]["profile"] = _timed(lambda: concentration_profile(pair, ps, bos, ranking, **prof_kw))
    prof_new, t["new"]["profile"] = _timed(lambda: concentration_profile(pair, ps, bos, ranking, resumed=scorers, **prof_kw))
    diff["profile"] = max(_max_diff(prof_old[k]["mean"], prof_new[k]["mean"]) for k in ("sufficiency", "necessity"))

    ext = {}
    for stage, reads in (("patching", True), ("patching_other", False)):
        ext_old, t["old"][stage] = _timed(lambda: patch_block(pair, ps, "logprob", bos, 12, triage=False))
        ext[stage], t["new"][stage] = _timed(lambda reads=reads: patch_block(pair, ps, "logprob", bos, 12, triage=True,
                                                                              verdict_reads=reads))
        diff[stage] = max([_max_diff(ext_old["patch"][key][k]["recovered"], ext[stage]["patch"][key][k]["recovered"])
                           for key in ("per_layer", "kept") for k in ext_old["patch"][key]]
                          + [_max_diff(ext_old["patch"]["grid"]["recovered"], ext[stage]["patch"]["grid"]["recovered"])])
    blk = ext["patching_other"]["patch"]
    triage = {f"{key}.{k}": v["triage"] for key in ("per_layer", "kept") for k, v in blk[key].items() if "triage" in v}
    triage["grid"] = blk["grid"].get("triage", {})

    same = {"top_layer": ranking[0] == ranking_from_windows(win_new)[0], "mask_ranking": mask_old.ranking_ == mask_new.ranking_,
            "profile_k80": _k_at(prof_old) == _k_at(prof_new)}
    total_old, total_new = sum(t["old"].values()), sum(t["new"].values())
    out = {"model": name, "layers": pair.n_layers, "prompts": len(ps), "threads": torch.get_num_threads(),
           "sizes": sizes, "mask_steps": args.mask_steps, "seconds": t, "max_abs_diff": diff,
           "total_old_s": round(total_old, 1), "total_new_s": round(total_new, 1),
           "ratio": round(total_old / total_new, 2), "same_localization": same,
           "triage": {k: {"confirmed": v.get("confirmed"), "top_layer_agrees": v.get("top_layer_agrees"),
                          "spearman": v.get("spearman")} for k, v in triage.items()},
           "mask_passes": mask_new.passes_}
    print(f"{name}: {pair.n_layers} layers, {len(ps)} prompts: earlier engine {out['total_old_s']} s, today's "
          f"{out['total_new_s']} s (x{out['ratio']}); same localization: {same}", flush=True)
    return out


def table(rows: list[dict]) -> list[str]:
    """The Markdown table of ``rows``: per config and stage, both times, the ratio and the largest difference."""
    lines = ["| config | layers | prompts | stage | earlier engine | today's | ratio | largest difference |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for s in STAGES:
            a, b = r["seconds"]["old"][s], r["seconds"]["new"][s]
            lines.append(f"| {r['model']} | {r['layers']} | {r['prompts']} | {s.replace('_', ' ')} | {a:.1f} s | {b:.1f} s | "
                         f"x{a / b:.2f} | {r['max_abs_diff'][s]:.1e} |")
        lines.append(f"| {r['model']} | | | **all** | {r['total_old_s']} s | {r['total_new_s']} s | **x{r['ratio']}** | "
                     f"same localization: {all(r['same_localization'].values())} |")
    return lines


def main(argv: list[str] | None = None) -> list[dict]:
    """Parse the options, run each config, print the table (and ``--json`` the rows)."""
    import json

    from scale import tokenizer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="smollm2-135m")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--sizes", default="1,2,4")
    ap.add_argument("--mask-steps", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        tok = tokenizer(Path(d))
        rows = []
        for m in args.models.split(","):
            rows.append(run(m, args, tok))
            if args.json:  # after each config, so a run cut short keeps what it measured
                args.json.write_text(json.dumps(rows, indent=1) + "\n")
    print("\n" + "\n".join(table(rows)))
    return rows


if __name__ == "__main__":
    main()
