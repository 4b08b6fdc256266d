"""Probe solvers: the batched torch L-BFGS against the per-(layer, fold) scikit-learn loop.

Builds a residual-stream-like synthetic problem (a class signal that rises and falls with depth,
a shared low-rank component, per-feature scales over two orders of magnitude, 4 massive outlier
dimensions), draws one set of stratified folds, and times ``probe_sklearn`` and ``probe_torch``
on all layers. Prints the mean accuracies, the largest per-layer accuracy difference (target
<= 0.01) and the speed ratio.

scikit-learn runs with its BLAS held to one thread (``threadpoolctl``): on a small machine that
is its fastest setting, as multi-threaded BLAS on these small fits is 10-100x slower
(``--also-sklearn-as-installed`` times that too: minutes, not seconds). torch runs with its
thread count as is unless ``--torch-threads`` says otherwise. Both are printed, with the load
average: when another process keeps a core busy, every multi-threaded torch op can wait a whole
scheduler slice (~15 ms on a 2-core box), so compare runs at similar load.

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
    """``acts [layer, n, d]`` (float32) and ``y [n]``: a class signal whose strength peaks at 60%
    depth, a rank-16 prompt-level component drifting across layers, per-feature scales over two
    orders of magnitude and 4 outlier dimensions (mean 100, scale x20)."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % classes)
    shared = rng.standard_normal((n, 16))
    mix = rng.standard_normal((16, d))
    acts = np.empty((layers, n, d), dtype=np.float32)
    for layer in range(layers):
        depth = layer / max(layers - 1, 1)
        strength = 0.12 * np.exp(-(((depth - 0.6) / 0.25) ** 2))
        mix = mix + 0.3 * rng.standard_normal(mix.shape)
        x = shared @ mix / 4 + rng.standard_normal((n, d))
        x += strength * rng.standard_normal((classes, d))[y]
        x *= 10 ** rng.uniform(-1, 1, size=d)
        x[:, :4] = x[:, :4] * 20 + 100
        acts[layer] = x
    return acts, y


def _timed(fn, *args, **kwargs) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    """Run the comparison; returns the timings (s) and the max per-layer accuracy difference."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=24)
    p.add_argument("--n", type=int, default=1200, help="prompts")
    p.add_argument("--d", type=int, default=256, help="d_model")
    p.add_argument("--classes", type=int, default=8)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--C", type=float, default=1.0, help="inverse L2 strength")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--torch-threads", type=int, default=None, help="default: as is")
    p.add_argument(
        "--also-unpreconditioned",
        action="store_true",
        help="also time probe_torch(precondition=False), the path used for large d_model",
    )
    p.add_argument(
        "--also-sklearn-as-installed",
        action="store_true",
        help="also time scikit-learn with its default BLAS threads (slow on small machines)",
    )
    args = p.parse_args(argv)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)

    acts, y = make_problem(args.layers, args.n, args.d, args.classes, args.seed)
    folds = cv_folds(y, args.folds, args.seed)
    blas = {
        i["internal_api"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"
    }
    print(
        f"{args.layers} layers x {args.n} prompts x d={args.d}, {args.classes} classes, "
        f"{len(folds)} folds, C={args.C}; torch threads {torch.get_num_threads()}, default BLAS "
        f"threads {blas}, cpus {os.cpu_count()}, load avg {os.getloadavg()[0]:.2f}"
    )

    probe_torch(acts[:1, :200], y[:200], cv_folds(y[:200], 2))  # warm-up (lazy init)
    acc_t, t_torch = _timed(probe_torch, acts, y, folds, C=args.C)
    with threadpool_limits(limits=1, user_api="blas"):
        acc_s, t_sk = _timed(probe_sklearn, acts, y, folds, C=args.C)
    diff = float(np.abs(acc_t - acc_s).max())
    print("per-layer accuracy, sklearn:", " ".join(f"{a:.2f}" for a in acc_s))
    print("per-layer accuracy, torch:  ", " ".join(f"{a:.2f}" for a in acc_t))
    print(
        f"mean accuracy: sklearn {acc_s.mean():.4f}, torch {acc_t.mean():.4f} "
        f"(chance {1 / args.classes:.3f})"
    )
    print(f"time: sklearn loop (1 BLAS thread) {t_sk:.2f} s, batched torch {t_torch:.2f} s")
    out = {"t_torch": t_torch, "t_sklearn": t_sk, "max_abs_diff": diff}
    if args.also_unpreconditioned:
        acc_p, out["t_torch_plain"] = _timed(
            probe_torch, acts, y, folds, C=args.C, precondition=False
        )
        d_p = np.abs(acc_p - acc_s).max()
        print(
            f"time: batched torch, no preconditioner {out['t_torch_plain']:.2f} s (max |diff| {d_p:.3f})"
        )
    if args.also_sklearn_as_installed:
        _, out["t_sklearn_installed"] = _timed(probe_sklearn, acts, y, folds, C=args.C)
        print(f"time: sklearn loop, BLAS threads as installed {out['t_sklearn_installed']:.2f} s")

    def line(ref: float, what: str = "") -> str:
        r = ref / t_torch
        speed = f"{r:.1f}x faster" if r >= 1 else f"{1 / r:.1f}x slower"
        return (
            f"batched torch solver: {speed} than the sklearn loop{what} (max |acc diff| {diff:.3f})"
        )

    print(line(t_sk))
    if "t_sklearn_installed" in out:
        print(line(out["t_sklearn_installed"], " with BLAS threads as installed"))
    return out


if __name__ == "__main__":
    main()
