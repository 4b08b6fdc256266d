"""How far the zoo's numbers move between machines: build the zoo several ways and tabulate the spread.

Training is chaotic, and another CPU sums in another order (other SIMD kernels, other thread
counts), so an organism built elsewhere has other weights. This script builds the same zoo under
several settings, each in its own zoo root, and prints every number the tests or the README quote
per build, with its min-max spread, the specification check of each artifact, and (``--proxy``)
the proxy-tuning verdict on each build. Settings (``--variants``, comma-separated):

- ``default``: as a fresh clone builds it here;
- ``threads1`` / ``threads2``: every training step with that many torch threads (``$ALIGNLOC_ZOO_THREADS``);
- ``avx2`` / ``nosimd``: torch's AVX2 / scalar kernels (``$ATEN_CPU_CAPABILITY=avx2`` / ``default``), a stand-in
  for another CPU; combine with ``+``: ``avx2+threads1``.

    python benchmarks/zoo_spread.py --root /tmp/spread --variants default,threads1,avx2+threads1 [--proxy] \
        [--jobs 2] [--json spread.json]

``--jobs 2`` builds two variants side by side; give them one thread each (``threads1``), since two
2-thread torch processes on 2 cores run many times slower than one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# every artifact the test suite builds
NAMES = (
    "chat-sft-upper chat-sft-lower chat-sft-full refusal-lora-L1 refusal-lora-L2 fact-edit-L1 dpo-polite "
    "control-continued control-drift chat-sft-upper-drift chat-sft-lower-drift refusal-lora-L1-drift "
    "refusal-lora-L2-drift fact-edit-L1-drift base-large chat-lima chat-lima-large chat-sft-full-large "
    "format-surfaced format-installed rl-formats rl-formats-large"
).split()
# the numbers quoted (README tables, test thresholds), per artifact side
KEYS = (
    "fact_recall_strong", "fact_recall_weak", "retention", "format_rate", "refusal_rate_on_topic",
    "refusal_rate_off_topic", "edit_success", "edit_paraphrase_success", "polite_rate", "marker_rate", "marker_prob",
    "demo_marker_rate", "demo_marker_prob", "ctx_memory_conflict_strong", "ctx_memory_conflict_weak",
    "ctx_follow_conflict_weak", "ctx_follow_conflict_strong", "format_answer_acc", "format_share_short",
    "format_share_sentence", "format_share_restate",
)
PROXY_KEYS = ("behavior_gap_closed", "behavior_gap_closed_vs_small_tuned", "knowledge_delta_vs_large_base",
              "proxy_fact_retention", "small_tuned_fact_retention")
ENV = {
    "threads1": {"ALIGNLOC_ZOO_THREADS": "1"}, "threads2": {"ALIGNLOC_ZOO_THREADS": "2"},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2"}, "nosimd": {"ATEN_CPU_CAPABILITY": "default"}, "default": {},
}


def variant_env(variant: str) -> dict[str, str]:
    """The environment of one build variant (``a+b`` merges both)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "PYTHONPATH": str(ROOT)}
    for part in variant.split("+"):
        if part not in ENV:
            raise SystemExit(f"zoo_spread: unknown variant part {part!r} (use {', '.join(ENV)})")
        env |= ENV[part]
    return env


def build_variant(root: Path, variant: str, names: list[str], proxy: bool) -> dict:
    """Build the zoo (and the proxy-tuning experiment) under ``variant`` in ``root / variant``; its log and time."""
    zoo = root / variant
    env = {**variant_env(variant), "ALIGNLOC_ZOO": str(zoo)}
    if "ALIGNLOC_ZOO_THREADS" in env and "OMP_NUM_THREADS" not in ENV.get(variant, {}):
        env["OMP_NUM_THREADS"] = env["ALIGNLOC_ZOO_THREADS"]
    zoo.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(zoo / "build.log", "w") as log:
        rc = subprocess.call([sys.executable, "-m", "alignloc.cli", "zoo", "build", *names], env=env, stdout=log,
                             stderr=subprocess.STDOUT)
        out = {"variant": variant, "rc": rc, "build_seconds": round(time.time() - t0)}
        if proxy and rc == 0:
            t1 = time.time()
            argv = ["proxy-tune", "--zoo", "--organism", "chat-lima", "--contrast", "chat-sft-full", "--overwrite",
                    "--out", str(zoo / "proxy")]
            out["proxy_rc"] = subprocess.call([sys.executable, "-m", "alignloc.cli", *argv], env=env, stdout=log,
                                              stderr=subprocess.STDOUT)
            out["proxy_seconds"] = round(time.time() - t1)
    return out


def collect(root: Path, variant: str) -> dict[str, dict]:
    """{artifact: {"side.key": value, "spec": ..., "cpu": ...}} read from one variant's zoo."""
    out: dict[str, dict] = {}
    for meta_file in sorted((root / variant / "tiny").glob("*/*.json")):
        if meta_file.name not in ("info.json", "ground_truth.json"):
            continue
        meta = json.loads(meta_file.read_text())
        m = meta.get("measured", {})
        sides = {"": m} if meta_file.name == "info.json" else {f"{s}.": v for s, v in m.items()}
        row = {f"{s}{k}": v[k] for s, v in sides.items() for k in KEYS if isinstance(v.get(k), (int, float))}
        spec = meta.get("spec") or {}
        row["spec"] = f"{'met' if spec.get('met') else 'MISSED'} @{spec.get('attempt')}" if spec else "-"
        row["cpu"] = meta.get("versions", {}).get("cpu_capability")
        out[meta_file.parent.name] = row
    report = root / variant / "proxy" / "report.json"
    if report.is_file():
        v = json.loads(report.read_text())["verdict"]
        out["proxy-tune chat-lima"] = {k: v[k] for k in PROXY_KEYS if isinstance(v.get(k), (int, float))}
    return out


def spread_table(per_variant: dict[str, dict[str, dict]]) -> list[dict]:
    """One row per (artifact, number): the value in each variant and max - min."""
    variants = list(per_variant)
    artifacts = sorted({a for v in per_variant.values() for a in v})
    rows = []
    for a in artifacts:
        keys = sorted({k for v in per_variant.values() for k in v.get(a, {}) if k not in ("spec", "cpu")})
        for k in ["spec", *keys]:
            vals = [per_variant[v].get(a, {}).get(k) for v in variants]
            nums = [x for x in vals if isinstance(x, (int, float))]
            rows.append({"artifact": a, "number": k, "values": vals,
                         "spread": round(max(nums) - min(nums), 4) if len(nums) == len(vals) and nums else None})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, required=True, help="one zoo per variant is built under ROOT/VARIANT")
    ap.add_argument("--variants", default="default,threads1,avx2+threads1")
    ap.add_argument("--names", default=",".join(NAMES), help="artifacts to build (default: all the suite uses)")
    ap.add_argument("--jobs", type=int, default=1, help="variants built side by side")
    ap.add_argument("--proxy", action="store_true", help="also run proxy-tune --zoo chat-lima on each build")
    ap.add_argument("--collect-only", action="store_true", help="read the zoos already built; build nothing")
    ap.add_argument("--json", type=Path, help="write the table and the build records here")
    args = ap.parse_args()
    variants = args.variants.split(",")
    for v in variants:
        variant_env(v)
    runs = []
    if not args.collect_only:
        with ThreadPoolExecutor(args.jobs) as pool:
            runs = list(pool.map(lambda v: build_variant(args.root, v, args.names.split(","), args.proxy), variants))
        for r in runs:
            print(f"# {r['variant']}: build rc {r['rc']} in {r['build_seconds']} s"
                  + (f"; proxy-tune rc {r.get('proxy_rc')} in {r.get('proxy_seconds')} s" if "proxy_rc" in r else ""))
    per_variant = {v: collect(args.root, v) for v in variants}
    rows = spread_table(per_variant)
    print(f"| artifact | number | {' | '.join(variants)} | spread |")
    print(f"|---|---|{'---|' * len(variants)}---|")
    for r in rows:
        vals = " | ".join("-" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x) for x in r["values"])
        spread = "" if r["spread"] is None else f"{r['spread']:.3f}"
        print(f"| {r['artifact']} | {r['number']} | {vals} | {spread} |")
    if args.json:
        args.json.write_text(json.dumps({"variants": variants, "runs": runs, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
