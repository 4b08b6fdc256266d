"""Cross-model activation patching: the batched sweep against one forward per cell, and TransformerLens.

For a full layer sweep of each ``--kinds`` site on a zoo organism (tuned activations patched into
the base model, teacher-forced target log-prob), times three routes that compute the same thing
(tuned forward with its activations, unpatched base forward, one patched result per layer):

(a) ``alignloc.causal.patching.patch_sweep``: all layers of a prompt batch in one forward (the
    batch repeated once per layer);
(b) a loop with one base forward per cell and alignloc's scoped HF hooks (as ``one_cell`` in
    tests/test_patching.py);
(c) TransformerLens v4: ``transformer_lens.patching.generic_activation_patch`` on a
    ``TransformerBridge`` around a copy of each side (alignloc's bridge backend, raw weights;
    the tuned activations from ``run_with_cache``), one ``run_with_hooks`` per cell.

Rounds interleave the three routes so that load from other processes hits them alike; the median
over rounds is printed with the ratios loop/batched and TL/batched, and the largest |difference|
between the three results (they agree to ~1e-6; tests/test_patching_tl.py asserts 1e-5). Bridge
boots are not timed. Torch threads and the load average are printed: on a small machine a busy
core slows multi-threaded torch ops a lot, so compare runs made at similar load.

The organism must be built (``alignloc zoo build NAME --size SIZE``) in ``$ALIGNLOC_ZOO`` or
``--zoo``; nothing is trained here.

    python benchmarks/patching.py [--organism refusal-lora-L2] [--size tiny] [--n 64]
        [--kinds resid_post,mlp_out,attn_out] [--positions all] [--batch 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # TL's sweeps show a progress bar per call

import torch  # noqa: E402

from alignloc.analyses.outputs import full_target_logprobs, teacher_forced_batch  # noqa: E402
from alignloc.causal.patching import patch_sweep  # noqa: E402
from alignloc.models.hooks import edit, record  # noqa: E402
from alignloc.models.pair import ModelPair, load_pair  # noqa: E402
from alignloc.sites import Site  # noqa: E402

Batch = tuple[torch.Tensor, torch.Tensor, list[int], list[list[int]]]  # ids, mask, ctx_lens, target ids


def load(organism: str, size: str) -> tuple[ModelPair, list]:
    """The organism's pair and its behavior prompts (raises if it is not built)."""
    from alignloc import zoo
    from alignloc.zoo import organism_prompts

    try:
        entry = zoo.resolve(organism, size=size, build_missing=False)
    except FileNotFoundError as e:  # the message says how to build it
        raise SystemExit(str(e)) from None
    if entry.tuned is None:
        raise SystemExit(f"{organism} is a base model; name an organism, e.g. refusal-lora-L2")
    pair = load_pair(str(entry.base), str(entry.tuned))
    prompts = [p for p in organism_prompts(organism, size=size) if p.kind == "behavior" and p.target]
    return pair, prompts


def overwrite(act: torch.Tensor, donor: torch.Tensor, positions: str | int, ctx_lens: list[int]) -> torch.Tensor:
    """``act`` with every position (``all``), each row's last context token (``last``) or the token
    ``positions`` (an int offset) before it, from ``donor``."""
    if positions == "all":
        return donor.clone()
    offset = 0 if positions == "last" else positions
    rows, at = torch.arange(len(ctx_lens)), torch.tensor([n - 1 + offset for n in ctx_lens])
    act = act.clone()
    act[rows, at] = donor[rows, at]
    return act


@torch.no_grad()
def loop_route(pair: ModelPair, batches: list[Batch], kind: str, positions: str | list[int]) -> list:
    """(b) One base forward per (batch, cell), patched with a scoped alignloc hook.

    ``positions``: ``all``, ``last`` or a list of offsets (a layer x offset grid).
    """
    sites = [Site(layer, kind) for layer in range(pair.n_layers)]
    where = positions if isinstance(positions, list) else [positions]
    cells: list[list[torch.Tensor]] = [[] for _ in range(len(sites) * len(where))]
    for ids, mask, ctx, tgt in batches:
        with record(pair.tuned.model, pair.tuned.family, sites) as donor:
            full_target_logprobs(pair.tuned.model(input_ids=ids, attention_mask=mask).logits, ctx, tgt)
        full_target_logprobs(pair.base.model(input_ids=ids, attention_mask=mask).logits, ctx, tgt)
        for i, site in enumerate(sites):
            for j, pos in enumerate(where):
                def fn(act, src=donor[site], ctx=ctx, pos=pos):
                    return overwrite(act, src, pos, ctx)

                with edit(pair.base.model, pair.base.family, site, fn):
                    logits = pair.base.model(input_ids=ids, attention_mask=mask).logits
                cells[i * len(where) + j].append(full_target_logprobs(logits, ctx, tgt))
    means = [float(torch.cat(x).mean()) for x in cells]
    return means if not isinstance(positions, list) else [means[i * len(where):(i + 1) * len(where)] for i in range(len(sites))]


@torch.no_grad()
def tl_route(base, tuned, batches: list[Batch], kind: str, positions: str) -> list[float]:
    """(c) TransformerLens: ``run_with_cache`` on the tuned bridge, ``generic_activation_patch`` on the base one.

    TL's sweep runs the bridge on the token tensor alone; batches are right-padded, so under
    causal attention the pads cannot change a scored position.
    """
    from transformer_lens import patching

    n_layers = base.cfg.n_layers
    names = [f"blocks.{layer}.hook_{kind}" for layer in range(n_layers)]
    values = []
    for ids, mask, ctx, tgt in batches:
        logits, cache = tuned.run_with_cache(ids, attention_mask=mask, names_filter=names)
        full_target_logprobs(logits, ctx, tgt)

        def setter(act, index, clean, ctx=ctx):
            return overwrite(act, clean, positions, ctx)

        res = patching.generic_activation_patch(
            base, ids, cache, lambda lg, ctx=ctx, tgt=tgt: full_target_logprobs(lg, ctx, tgt),
            patch_setter=setter, activation_name=kind, index_axis_names=("layer",),
            reduce="none", baseline=True,
        )
        values.append(res.values)  # [layer, b]
    return torch.cat(values, dim=1).mean(dim=1).tolist()


def main(argv: list[str] | None = None) -> dict:
    """Run the comparison; returns the median times (s) per route and the max |difference|."""
    from alignloc.zoo.config import SIZES

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--organism", default="refusal-lora-L2", help="a built zoo organism")
    p.add_argument("--size", default="tiny", choices=sorted(SIZES), help="zoo size")
    p.add_argument("--zoo", default=None, help="zoo root (default: $ALIGNLOC_ZOO or the user cache)")
    p.add_argument("--n", type=int, default=64, help="prompts (the organism's behavior prompts)")
    p.add_argument("--kinds", default="resid_post,mlp_out,attn_out", help="comma-separated site kinds")
    p.add_argument("--positions", default="all", choices=["all", "last", "each"],
                   help="each: a layer x position grid over the --window last context tokens (no TL route)")
    p.add_argument("--window", type=int, default=8, help="context tokens of the --positions each grid")
    p.add_argument("--batch", type=int, default=8, help="prompts per batch, all routes")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--torch-threads", type=int, default=None, help="default: as is")
    args = p.parse_args(argv)
    if args.zoo:
        os.environ["ALIGNLOC_ZOO"] = args.zoo
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]

    from alignloc.models.backends.bridge import BridgeBackend

    pair, prompts = load(args.organism, args.size)
    prompts = prompts[: args.n]
    batches = [teacher_forced_batch(pair.tokenizer, prompts[i : i + args.batch], True, None)
               for i in range(0, len(prompts), args.batch)]
    t0 = time.perf_counter()
    base_b, tuned_b = BridgeBackend(pair.base).bridge, BridgeBackend(pair.tuned).bridge
    boot = time.perf_counter() - t0
    n_tok = sum(int(b[1].sum()) for b in batches)
    grid = args.positions == "each"
    if grid:
        from alignloc.causal.patching import context_offsets

        offsets = context_offsets(pair.tokenizer, prompts, True, None, args.window)
    cells = len(kinds) * pair.n_layers * (len(offsets) if grid else 1)
    print(f"organism {args.organism} ({args.size}): {pair.n_layers} layers, d_model {pair.base.d_model}; "
          f"{len(prompts)} prompts, {n_tok / len(prompts):.1f} tokens each, batch {args.batch}; "
          f"kinds {','.join(kinds)}, positions {args.positions}: {cells} cells "
          f"({cells * len(batches)} per-cell forwards for the loop and TL routes)")
    print(f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}, "
          f"load avg {os.getloadavg()[0]:.2f}; bridge boots {boot:.2f} s (not timed below)")

    routes = {
        "batched patch_sweep": lambda k: patch_sweep(pair, prompts, kind=k, positions=args.positions,
                                                     batch_size=args.batch, window=args.window)["patched"],
        "loop, one forward per cell": lambda k: loop_route(pair, batches, k, offsets if grid else args.positions),
    }
    if not grid:  # TL's position sweeps index absolute positions, which differ between these prompts
        routes["TransformerLens generic_activation_patch"] = lambda k: tl_route(base_b, tuned_b, batches, k, args.positions)
    results = {name: {k: fn(k) for k in kinds} for name, fn in routes.items()}  # also the warm-up
    times: dict[str, list[float]] = {name: [] for name in routes}
    for _ in range(args.rounds):
        for name, fn in routes.items():
            t = time.perf_counter()
            for k in kinds:
                fn(k)
            times[name].append(time.perf_counter() - t)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    ref = med["batched patch_sweep"]
    for name, ts in times.items():
        print(f"  {name:>42}: {med[name]:.3f} s (min {min(ts):.3f}, max {max(ts):.3f}), "
              f"{med[name] / ref:.2f}x batched")
    names = list(routes)

    def flat(x: list) -> list[float]:
        return sum(x, []) if grid else x

    diff = max(abs(a - b) for k in kinds for i, x in enumerate(names) for y in names[i + 1:]
               for a, b in zip(flat(results[x][k]), flat(results[y][k]), strict=True))
    ratios = ", ".join(f"{'loop' if 'loop' in n else 'TL'}/batched {med[n] / ref:.2f}x" for n in names[1:])
    print(f"{ratios} over {cells} cells, {args.rounds} rounds (median); max |difference| between the "
          f"{len(names)} results {diff:.2e}; load avg now {os.getloadavg()[0]:.2f}")
    return {"times": med, "max_abs_diff": diff, "cells": cells}


if __name__ == "__main__":
    main()
