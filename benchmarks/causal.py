"""The graft stages of `layer-diff --causal` (windows, concentration profile): full forwards per graft against
resumed ones, on real-size configs.

A window grafted at block i leaves every block below i as it was, so the resumed engine
(``alignloc.causal.resumed``) records each recipient's run once and starts every graft at block i.
This script builds a random-weight pair of each ``--models`` config (``benchmarks/scale.py``: real
widths, depths and vocabularies; tuned = base + noise on every block), sweeps the same windows both
ways, then runs the concentration profile over the single-layer ranking (the ranking the profile follows
without a mask), and prints each engine's time per stage, their ratio and the largest difference of any
sufficiency or necessity (the same computation: it should be ~1e-6). The resumed profile reuses the
windows' recorded runs, as `layer-diff` does.

    python benchmarks/causal.py [--models smollm2-135m] [--prompts 16] [--sizes 1,2,4,8] [--device cpu]

The mask and patching are not timed here.
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


def run(name: str, args, tok) -> dict:
    """Both engines on one config; returns the times, the ratio and the largest difference."""
    import torch
    from scale import build_pair, prompts

    from alignloc.causal.graft import target_metric, window_sweep
    from alignloc.causal.profile import concentration_profile, ranking_from_windows
    from alignloc.causal.resumed import ResumedScorer

    pair = build_pair(name, tok, args.device)
    ps = prompts(args.prompts)
    bos = True
    sizes = [int(x) for x in args.sizes.split(",")]
    metric = target_metric(ps, None, bos)
    t0 = time.perf_counter()
    full = window_sweep(pair, metric, sizes)
    t_full = time.perf_counter() - t0
    t0 = time.perf_counter()
    scorers = (ResumedScorer(pair.base, ps, bos), ResumedScorer(pair.tuned, ps, bos))
    fast = window_sweep(pair, metric, sizes, resumed=scorers)
    t_fast = time.perf_counter() - t0
    diff = max(abs(a - b) for w in full["windows"] for key in ("sufficiency", "necessity")
               for a, b in zip(full["windows"][w][key], fast["windows"][w][key], strict=True))
    ranking = ranking_from_windows(full)
    t0 = time.perf_counter()
    pf = concentration_profile(pair, ps, bos, ranking, ranking_source="single-layer grafting", n_boot=100)
    t_pfull = time.perf_counter() - t0
    t0 = time.perf_counter()
    pr = concentration_profile(pair, ps, bos, ranking, ranking_source="single-layer grafting", n_boot=100,
                               resumed=scorers)
    t_pfast = time.perf_counter() - t0
    pdiff = max(abs(a - b) for key in ("sufficiency", "necessity")
                for a, b in zip(pf[key]["mean"], pr[key]["mean"], strict=True))
    out = {"model": name, "layers": pair.n_layers, "prompts": len(ps), "windows": sum(len(full["windows"][w]["starts"])
                                                                                      for w in full["windows"]),
           "full_s": round(t_full, 1), "resumed_s": round(t_fast, 1), "ratio": round(t_full / t_fast, 2),
           "max_abs_diff": diff, "engine": fast["engine"], "threads": torch.get_num_threads(),
           "profile_sets": len(pf["sets"]), "profile_full_s": round(t_pfull, 1), "profile_resumed_s": round(t_pfast, 1),
           "profile_ratio": round(t_pfull / t_pfast, 2), "profile_max_abs_diff": pdiff}
    print(f"{name}: {out['layers']} layers, {out['prompts']} prompts, {out['windows']} windows x 2 grafts: full "
          f"{out['full_s']} s, resumed {out['resumed_s']} s (x{out['ratio']}), largest difference {diff:.1e}; "
          f"profile ({out['profile_sets']} sets x 2): full {out['profile_full_s']} s, resumed {out['profile_resumed_s']} s "
          f"(x{out['profile_ratio']}), largest difference {pdiff:.1e}", flush=True)
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    """Parse the options, run each config, print a Markdown table."""
    from scale import tokenizer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="smollm2-135m")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--sizes", default="1,2,4,8")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        tok = tokenizer(Path(d))
        rows = [run(m, args, tok) for m in args.models.split(",")]
    print("\n| config | layers | prompts | stage | grafts | full forwards | resumed | ratio | largest difference |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['layers']} | {r['prompts']} | windows | {2 * r['windows']} | {r['full_s']} s | "
              f"{r['resumed_s']} s | x{r['ratio']} | {r['max_abs_diff']:.1e} |")
        print(f"| {r['model']} | {r['layers']} | {r['prompts']} | profile | {2 * r['profile_sets']} | {r['profile_full_s']} s | "
              f"{r['profile_resumed_s']} s | x{r['profile_ratio']} | {r['profile_max_abs_diff']:.1e} |")
        total = (r["full_s"] + r["profile_full_s"]) / (r["resumed_s"] + r["profile_resumed_s"])
        print(f"| {r['model']} | {r['layers']} | {r['prompts']} | both | | {r['full_s'] + r['profile_full_s']:.1f} s | "
              f"{r['resumed_s'] + r['profile_resumed_s']:.1f} s | x{total:.2f} | |")
    return rows


if __name__ == "__main__":
    main()
