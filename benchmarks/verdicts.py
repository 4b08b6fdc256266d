"""The graded verdict on the zoo: `layer-diff zoo:NAME --causal` on each organism, one table row each.

For every organism: the planted layers, the behavior grade (localized / concentrated but redundant /
distributed) with the layers named or the sufficient set, the concentration profile (the smallest k
whose top-k layers bring / remove 80% of the gap, and the numbers at the named k with their 95%
intervals), the verdict against the control pair (tuned vs control), and the time. Writes Markdown
(the README quotes it) and the reports' verdict blocks as JSON:

    python benchmarks/verdicts.py --out benchmarks/results/verdicts.md [--names a,b] [--mask-steps 100]

Runs on the tiny zoo (built on first use under $ALIGNLOC_ZOO); about 1-2 minutes per organism on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NAMES = ("chat-sft-upper", "chat-sft-lower", "chat-sft-full", "refusal-lora-L1", "refusal-lora-L2",
         "chat-sft-upper-drift", "chat-sft-lower-drift", "refusal-lora-L1-drift", "refusal-lora-L2-drift",
         "control-continued", "control-drift")


def _pct(ci: dict, k: int) -> str:
    i = k - 1
    return f"{ci['mean'][i]:.2f} [{ci['lo'][i]:.2f}, {ci['hi'][i]:.2f}]"


def row(name: str, report: dict, seconds: float) -> str:
    """One Markdown row from a layer-diff report."""
    v = report["verdict"]
    planted = (report.get("ground_truth") or {}).get("layers") or "none"
    b = v.get("behavior") or {}
    grade = b.get("grade") or "no change"
    if grade == "localized":
        what = f"**{b['layers']}** ({b['carrier']['source']}: {b['carrier']['sufficiency']:.2f} / {b['carrier']['necessity']:.2f})"
    elif grade == "concentrated":
        s = b["sufficient"]
        what = f"{s['layers']} alone bring {s['sufficiency']:.2f}, removing them costs {s['necessity']:.2f}"
    else:
        what = b.get("reason", "-")
    prof = (((report.get("causal") or {}).get("localize") or {}).get("behavior") or {}).get("profile")
    if prof:
        k = len(b["layers"]) if b.get("layers") else (prof["k_sufficient"]["0.8"] or len(prof["sets"]))
        shape = (f"k80: {prof['k_sufficient']['0.8'] or '-'} / {prof['k_necessary']['0.8'] or '-'}; top-{k} "
                 f"{prof['sets'][k - 1]}: {_pct(prof['sufficiency'], k)} / {_pct(prof['necessity'], k)} ({prof['metric']})")
    else:
        shape = "-"
    vs = v.get("behavior_vs_control")
    versus = "-" if not vs else (f"**{vs['layers']}**" if vs.get("localized") else (vs.get("grade") or "no change"))
    gap = b.get("gap")
    return (f"| `{name}` | {planted} | {grade} | {what} | {shape} | {versus} | "
            f"{'-' if gap is None else f'{gap:+.2f}'} | {seconds:.0f} s |")


def main(argv: list[str] | None = None) -> int:
    """Run the organisms, print and write the table."""
    from alignloc.cli import main as cli

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--names", default=",".join(NAMES))
    ap.add_argument("--mask-steps", type=int, default=100)
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument("--out", type=Path, required=True, help="Markdown file; the verdict blocks go next to it as .json")
    a = ap.parse_args(argv)
    head = ["| organism | planted | behavior grade | named / sufficient set (sufficiency / necessity) | profile: smallest k "
            "bringing / removing 80%; numbers at k [95% CI] | vs control | gap (nats) | time |", "|---" * 8 + "|"]
    rows, blocks = [], {}
    with tempfile.TemporaryDirectory(prefix="alignloc-verdicts-") as tmp:
        for name in a.names.split(","):
            t0 = time.time()
            out = Path(tmp) / name
            rc = cli(["layer-diff", f"zoo:{name}", "--out", str(out), "--n-boot", str(a.n_boot), "--no-probes", "--causal",
                      "--mask-steps", str(a.mask_steps)])
            if rc != 0:
                print(f"{name}: layer-diff exited {rc}", file=sys.stderr)
                return rc
            report = json.loads((out / "report.json").read_text())
            rows.append(row(name, report, time.time() - t0))
            blocks[name] = {k: report["verdict"].get(k) for k in ("grades", "behavior", "behavior_vs_control", "summary")}
            print(rows[-1], flush=True)
    text = "\n".join(head + rows) + "\n"
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(f"# Graded verdicts on the tiny zoo (`python benchmarks/verdicts.py --mask-steps {a.mask_steps}`)\n\n"
                     + text)
    a.out.with_suffix(".json").write_text(json.dumps(blocks, indent=1) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
