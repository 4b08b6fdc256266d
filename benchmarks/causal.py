"""The stages of `layer-diff --causal` on real-size configs, stage by stage: the earlier engine against today's.

Each ``--models`` entry is a random-weight pair of that configuration (``benchmarks/scale.py``: real
widths, depths and vocabularies; tuned = base + noise on every block). On ``--prompts`` behavior-like
prompts (the real tier's knowledge, chat and refusal questions, each with its target), it runs what
``causal.localize`` and ``causal.report`` run for one prompt kind, twice:

- **earlier engine**: the package as it was at ``--earlier`` (default ``EARLIER``, the last commit before
  the engine below), extracted with ``git archive`` and run in a process of its own: every graft a full
  forward (windows, profile), the mask's samples one full forward each, every patch sweep exact, each
  with its own recorded runs, one attribution pass per site kind, padded batches;
- **today's engine** (this checkout): grafts resumed at their first block from each model's recorded
  run (``causal.resumed``), rows of similar length together (``metrics.in_length_groups``), the mask's samples
  resumed, stacked into one forward per step (``causal.mixed``) and not rerun when drawn again, the
  profile's two metrics off one forward per graft, the sweeps of one direction from one recording
  (``patch_sweeps``) and one attribution pass per direction, the extra sweeps triaged by attribution
  (``causal.triage``), a window of more than one layer reverted only where it brings half the gap
  (``graft.CONFIRM_AT``).

Stages: ``windows`` (graft windows of ``--sizes``), ``mask`` (``--mask-steps``), ``profile`` (over the
single-layer ranking), ``patching`` (the report's patch block of the prompts the verdict reads: per-layer
sweeps both ways, the resid_pre grid, attribution) and ``patching other`` (the same block for a prompt
kind the verdict does not read, as `layer-diff` runs it for knowledge and context prompts: there the
tuned-into-base sweeps are triaged too). For each it prints both times, their ratio and the largest
difference between the two engines' numbers where they compute the same thing (windows, profile, the
mask's gates; for the triaged sweeps and windows, the confirmed ones against the full sweep), then the totals and
whether the localization agrees (the single-layer ranking's top layer, the mask's ranking, the
profile's smallest k carrying 80% each way). `layer-diff --causal` runs these stages for the behavior
prompts and the knowledge facts that moved (windows, mask, profile) and patching for each prompt kind.

    python benchmarks/causal.py [--models smollm2-135m,qwen2.5-0.5b,gemma-3-270m] [--prompts 16]
        [--sizes 1,2,4] [--mask-steps 20] [--device cpu] [--earlier REV] [--json rows.json]
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
EARLIER = "c712b2e"  # the last commit before the causal engine's changes below: its package is the earlier engine


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


def stages(name: str, args, tok, earlier: bool) -> dict:
    """Each stage's seconds and numbers with the ``alignloc`` on ``sys.path``: today's engine, or with ``earlier``
    the earlier one's API (``window_sweep`` without scorers, ``report._kind_block`` without triage)."""
    import torch
    from scale import build_pair, prompts

    from alignloc.causal import report
    from alignloc.causal.graft import target_metric, window_sweep
    from alignloc.causal.mask import DeltaMask
    from alignloc.causal.profile import concentration_profile, ranking_from_windows

    torch.manual_seed(0)
    pair = build_pair(name, tok, args.device)
    ps = [p for p in prompts(args.prompts) if p.target]
    bos, sizes = True, [int(x) for x in args.sizes.split(",")]
    metric = target_metric(ps, None, bos)
    t, res = {}, {}
    prof_kw = dict(ranking_source="single-layer grafting", n_boot=100, batch_size=8)
    if earlier:
        win, t["windows"] = _timed(lambda: window_sweep(pair, metric, sizes))
    else:
        from alignloc.causal.graft import (
            CONFIRM_AT,  # as layer-diff runs it: wider windows reverted where they carry
        )
        from alignloc.causal.resumed import ResumedScorer

        scorers, t_rec = _timed(lambda: (ResumedScorer(pair.base, ps, bos, 8), ResumedScorer(pair.tuned, ps, bos, 8)))
        win, t_win = _timed(lambda: window_sweep(pair, metric, sizes, resumed=scorers, necessity_at=CONFIRM_AT))
        t["windows"] = t_rec + t_win  # the recorded runs serve the profile too
        prof_kw["resumed"] = scorers
    res["windows"] = [win["windows"][w][k] for w in win["windows"] for k in ("sufficiency", "necessity")]
    mask, t["mask"] = _timed(lambda: DeltaMask(steps=args.mask_steps).fit(pair, ps, bos))
    res["mask"] = mask.gates_.tolist()
    ranking = ranking_from_windows(win)
    prof, t["profile"] = _timed(lambda: concentration_profile(pair, ps, bos, ranking, **prof_kw))
    res["profile"] = [prof[k]["mean"] for k in ("sufficiency", "necessity")]
    blocks = {}
    for stage, reads in (("patching", True), ("patching_other", False)):
        if earlier and stage == "patching_other":  # the earlier engine ran the same block for every prompt kind
            blocks[stage], t[stage] = blocks["patching"], t["patching"]
        elif earlier:
            blocks[stage], t[stage] = _timed(lambda: report._kind_block(pair, ps, "logprob", bos, 12))
        else:
            blocks[stage], t[stage] = _timed(lambda reads=reads: report.patch_block(pair, ps, "logprob", bos, 12, triage=True,
                                                                                     verdict_reads=reads))
        blk = blocks[stage]["patch"]
        res[stage] = [blk[key][k]["recovered"] for key in ("per_layer", "kept") for k in sorted(blk[key])] + [blk["grid"]["recovered"]]
    out = {"seconds": t, "results": res, "top_layer": ranking[0], "mask_ranking": mask.ranking_, "profile_k80": _k_at(prof),
           "threads": torch.get_num_threads(), "layers": pair.n_layers, "prompts": len(ps)}
    if not earlier:
        blk = blocks["patching_other"]["patch"]
        triage = {f"{key}.{k}": v["triage"] for key in ("per_layer", "kept") for k, v in blk[key].items() if "triage" in v}
        triage["grid"] = blk["grid"].get("triage", {})
        out["triage"] = {k: {"confirmed": v.get("confirmed"), "top_layer_agrees": v.get("top_layer_agrees"),
                             "spearman": v.get("spearman")} for k, v in triage.items()}
        out["mask_passes"] = mask.passes_
    return out


def earlier_stages(name: str, args, tok_dir: Path) -> dict:
    """``stages`` of the earlier engine: the package as it was at ``args.earlier`` (``git archive``), in a fresh process."""
    import json
    import subprocess

    with tempfile.TemporaryDirectory() as d:
        src = subprocess.run(["git", "-C", str(ROOT), "archive", args.earlier, "alignloc"], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", d], input=src, check=True)
        out = Path(d) / "stages.json"
        subprocess.run([sys.executable, __file__, "--models", name, "--prompts", str(args.prompts), "--sizes", args.sizes,
                        "--mask-steps", str(args.mask_steps), "--device", args.device, "--stages-of", d,
                        "--tokenizer", str(tok_dir), "--json", str(out)], check=True)
        return json.loads(out.read_text())


def run(name: str, args, tok, tok_dir: Path) -> dict:
    """Both engines on one config: per-stage seconds, ratios, largest differences and the agreement."""
    old = earlier_stages(name, args, tok_dir)
    new = stages(name, args, tok, earlier=False)
    diff = {s: _max_diff(old["results"][s], new["results"][s]) for s in STAGES}
    same = {k: old[k] == new[k] for k in ("top_layer", "mask_ranking", "profile_k80")}
    total_old, total_new = sum(old["seconds"].values()), sum(new["seconds"].values())
    out = {"model": name, "layers": new["layers"], "prompts": new["prompts"], "threads": new["threads"],
           "earlier": args.earlier, "sizes": args.sizes, "mask_steps": args.mask_steps,
           "seconds": {"old": old["seconds"], "new": new["seconds"]}, "max_abs_diff": diff,
           "total_old_s": round(total_old, 1), "total_new_s": round(total_new, 1),
           "ratio": round(total_old / total_new, 2), "same_localization": same, "triage": new["triage"],
           "mask_passes": new["mask_passes"]}
    print(f"{name}: {out['layers']} layers, {out['prompts']} prompts: earlier engine {out['total_old_s']} s, today's "
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

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="smollm2-135m")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--sizes", default="1,2,4")
    ap.add_argument("--mask-steps", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--earlier", default=EARLIER, help="the commit whose engine is the earlier one")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    ap.add_argument("--stages-of", default=None, help=argparse.SUPPRESS)  # internal: run the package found there
    ap.add_argument("--tokenizer", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    from scale import tokenizer

    if args.stages_of:  # the earlier engine's process: its package first on the path
        sys.path.insert(0, args.stages_of)
        from transformers import AutoTokenizer

        out = stages(args.models, args, AutoTokenizer.from_pretrained(args.tokenizer), earlier=True)
        args.json.write_text(json.dumps(out) + "\n")
        return [out]
    with tempfile.TemporaryDirectory() as d:
        tok = tokenizer(Path(d))
        rows = []
        for m in args.models.split(","):
            rows.append(run(m, args, tok, Path(d)))
            if args.json:  # after each config, so a run cut short keeps what it measured
                args.json.write_text(json.dumps(rows, indent=1) + "\n")
    print("\n" + "\n".join(table(rows)))
    return rows


if __name__ == "__main__":
    main()
