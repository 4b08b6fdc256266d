"""Probe solvers: the batched torch L-BFGS against the per-(layer, fold) scikit-learn loop.

Builds a residual-stream-like synthetic problem (a class signal that rises and falls with depth,
anisotropic features, a few massive outlier dimensions), draws one set of stratified folds, and
times ``probe_sklearn`` and ``probe_torch`` on all layers. Prints the mean accuracies, the largest
per-layer accuracy difference (target <= 0.01) and the speed ratio.

scikit-learn is timed twice: as installed (its BLAS picks its own thread count, which on small
shared machines makes these small fits far slower) and with BLAS held to one thread
(``threadpoolctl``), its fastest setting on such machines; the fair ratio is the second. torch
runs with its thread count as is (printed).

    python benchmarks/probes.py [--layers 24] [--n 1200] [--d 256] [--classes 8]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from threadpoolctl import threadpool_info, threadpool_limits  # noqa: E402

from alignloc.analyses.probes import cv_folds, probe_sklearn, probe_torch  # noqa: E402


def make_problem(
    layers: int, n: int, d: int, classes: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``acts [layer, n, d]`` (float32) and ``y [n]``: a class signal in a rank-``classes``
    subspace whose strength peaks at 60% depth, shared low-rank structure drifting across
    layers, per-feature scales over two orders of magnitude and 4 outlier dimensions."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % classes)
    shared = rng.standard_normal((n, 16))  # prompt-level structure that every layer carries
    mix = rng.standard_normal((16, d))
    acts = np.empty((layers, n, d), dtype=np.float32)
    for layer in range(layers):
        depth = layer / max(layers - 1, 1)
        strength = 0.12 * np.exp(-(((depth - 0.6) / 0.25) ** 2))
        mix = mix + 0.3 * rng.standard_normal(mix.shape)
        x = shared @ mix / 4 + rng.standard_normal((n, d))
        x += strength * rng.standard_normal((classes, d))[y]
        x *= 10 ** rng.uniform(-1, 1, size=d)
        x[:, :4] = x[:, :4] * 20 + 100  # massive activations
        acts[layer] = x
    return acts, y


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=24)
    p.add_argument("--n", type=int, default=1200, help="prompts")
    p.add_argument("--d", type=int, default=256, help="d_model")
    p.add_argument("--classes", type=int, default=8)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--C", type=float, default=1.0, help="inverse L2 strength")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--skip-default-threads", action="store_true",
        help="skip the slow as-installed scikit-learn run",
    )  # fmt: skip
    args = p.parse_args(argv)

    acts, y = make_problem(args.layers, args.n, args.d, args.classes, args.seed)
    folds = cv_folds(y, args.folds, args.seed)
    blas = {
        i["internal_api"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"
    }
    print(
        f"{args.layers} layers x {args.n} prompts x d={args.d}, {args.classes} classes, "
        f"{len(folds)} folds, C={args.C}; torch threads {torch.get_num_threads()}, BLAS threads "
        f"{blas}, cpus {os.cpu_count()}, load avg {os.getloadavg()[0]:.2f}"
    )

    probe_torch(acts[:1, :200], y[:200], cv_folds(y[:200], 2))  # warm-up (lazy init)
    t0 = time.perf_counter()
    acc_t = probe_torch(acts, y, folds, C=args.C)
    t_torch = time.perf_counter() - t0
    with threadpool_limits(limits=1, user_api="blas"):
        t0 = time.perf_counter()
        acc_s = probe_sklearn(acts, y, folds, C=args.C)
        t_sk1 = time.perf_counter() - t0
    t_sk = None
    if not args.skip_default_threads:
        t0 = time.perf_counter()
        acc_s_default = probe_sklearn(acts, y, folds, C=args.C)
        t_sk = time.perf_counter() - t0
        assert np.array_equal(acc_s_default, acc_s) or np.abs(acc_s_default - acc_s).max() < 0.01

    diff = float(np.abs(acc_t - acc_s).max())
    print("per-layer accuracy (torch):  ", " ".join(f"{a:.2f}" for a in acc_t))
    print("per-layer accuracy (sklearn):", " ".join(f"{a:.2f}" for a in acc_s))
    print(
        f"mean accuracy: sklearn {acc_s.mean():.4f}, torch {acc_t.mean():.4f}; chance {1 / args.classes:.3f}"
    )
    print(f"time: batched torch {t_torch:.2f} s; sklearn loop, 1 BLAS thread {t_sk1:.2f} s", end="")
    print(f"; sklearn loop as installed {t_sk:.2f} s" if t_sk is not None else "")

    def line(ref: float, what: str) -> str:
        r = ref / t_torch
        speed = f"{r:.1f}x faster" if r >= 1 else f"{1 / r:.1f}x slower"
        return (
            f"batched torch solver: {speed} than the sklearn loop{what} (max |acc diff| {diff:.3f})"
        )

    print(line(t_sk1, " with 1 BLAS thread"))
    if t_sk is not None:
        print(line(t_sk, " as installed"))
    return {"t_torch": t_torch, "t_sklearn_1thread": t_sk1, "t_sklearn": t_sk, "max_abs_diff": diff}


if __name__ == "__main__":
    main()
