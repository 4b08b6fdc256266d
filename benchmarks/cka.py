"""Linear CKA's bootstrap interval: each resample recomputed on resampled rows (the feature form,
``O(n d^2)`` per resample) against ``analyses.shift.cka_bootstrap`` (the Gram matrices once, then
``O(n^2)`` per resample from the resample's multiplicities).

Builds one layer of residual-stream-like activations (a large shared mean direction, base and
tuned differing by noise), times both on the same resamples, and prints the times, their ratio
and the largest difference. layer-diff computes this once per layer (30 on SmolLM2-135M), on all
its prompts (1,461 on the default suites).

    python benchmarks/cka.py [--n 1461] [--d 576] [--boot 200]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from alignloc.analyses.shift import cka_bootstrap, linear_cka  # noqa: E402
from alignloc.analyses.stats import bootstrap_indices  # noqa: E402


def main() -> None:
    """Time both ways on one synthetic layer and print the comparison."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1461)
    ap.add_argument("--d", type=int, default=576)
    ap.add_argument("--boot", type=int, default=200)
    a = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    base = torch.randn(a.n, a.d, generator=g)
    base[:, 0] += 50.0  # a residual stream's large mean direction
    tuned = base + 0.5 * torch.randn(a.n, a.d, generator=g)
    idx = bootstrap_indices(a.n, a.boot, seed=0)
    t0 = time.perf_counter()
    rows = torch.tensor([linear_cka(base[i], tuned[i]) for i in idx], dtype=torch.float64)
    t_rows = time.perf_counter() - t0
    t0 = time.perf_counter()
    grams = cka_bootstrap(base, tuned, idx)
    t_grams = time.perf_counter() - t0
    print(f"n={a.n} d={a.d} resamples={a.boot} torch threads={torch.get_num_threads()}")
    print(f"resampled rows (feature form): {t_rows:.2f} s")
    print(f"multiplicities on the Gram matrices: {t_grams:.2f} s")
    print(f"ratio: x{t_rows / t_grams:.1f}; largest difference {float((rows - grams).abs().max()):.1e}")


if __name__ == "__main__":
    main()
