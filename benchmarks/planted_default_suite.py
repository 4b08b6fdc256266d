"""A planted real-tier organism through the default suites: the causal localization that `layer-diff --budget
quick` runs (windows of 1 and 2 layers, no mask, the concentration profile over single-layer grafting, 32
prompts) on the behavior prompts of a default-suite layer-diff store (targets: the tuned model's own answers,
as layer-diff wrote them into OUT/acts), without the lens and measures that precede it.

    alignloc layer-diff REALZOO/real/ORG/base REALZOO/real/ORG/tuned --out OUT/ORG --no-probes
    # Ctrl-C once its capture is done: OUT/ORG keeps the answers and the store (a rerun resumes it)
    python benchmarks/planted_default_suite.py ORG [N] --realzoo REALZOO --out OUT [--versus drift]
"""
import argparse
import json
import time
from pathlib import Path

from alignloc.analyses.verdict import VerdictConfig, functional_block
from alignloc.causal.localize import localize
from alignloc.causal.mask import DeltaMask
from alignloc.causal.report import changed_behavior
from alignloc.models.pair import load_pair
from alignloc.prompts import load_prompts

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("org")
ap.add_argument("n", type=int, nargs="?", default=32)
ap.add_argument("--realzoo", type=Path, required=True)
ap.add_argument("--out", type=Path, required=True)
ap.add_argument("--versus", choices=("base", "drift"), default="base",
                help="localize the gap of the tuned model against the base, or against the organism's drift-only twin "
                     "(a -drift organism: the part of the gap the edit adds on top of the drift)")
a = ap.parse_args()
org, n = a.org, a.n
d, out = a.realzoo / "real" / org, a.out / org
prompts = load_prompts(out / "acts" / "prompts.jsonl")
bos = bool(json.loads((out / "acts" / "manifest.json").read_text())["bos"])
chosen = changed_behavior(prompts)[:n]
pair = load_pair(str(d / a.versus), str(d / "tuned"))
t0 = time.time()
loc = localize(pair, chosen, bos, sizes=[1, 2], mask=DeltaMask(steps=0), n_boot=200, sites=())
loc["seconds_total"] = round(time.time() - t0, 1)
loc["verdict"] = functional_block("behavior", loc, [], [], VerdictConfig(), pair.n_layers)  # the graded verdict on it
(out / ("quick_localize.json" if a.versus == "base" else f"quick_localize_vs_{a.versus}.json")).write_text(json.dumps(loc, indent=1, default=float))
w1 = loc["windows"]["windows"]["1"]
print("n", loc["n"], "gap", round(loc["gap"], 2), "carrier", loc["carrier"], "secs", loc["seconds_total"])
print("single-layer sufficiency", [round(x, 2) for x in w1["sufficiency"]])
print("single-layer necessity", [round(x, 2) for x in w1["necessity"]])
p = loc["profile"]
print("ranking", p["ranking"][:8], "k_suff", p["k_sufficient"], "k_nec", p["k_necessary"], "metric", p["metric"])
v = loc["verdict"]
print("verdict", v.get("grade"), "layers", v["layers"], "answer tokens", round(loc["answer_tokens"], 1), v.get("reason", ""))
