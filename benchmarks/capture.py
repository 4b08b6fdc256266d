"""Capture speed and memory, as ratios (speed targets live here, never in timed tests).

Prints, in one run:
- capture time / plain HF forward of both models (target <= 1.1x; capture may skip layers after
  the last requested site and the unembedding, so < 1.0x is possible), for the default ``hf``
  backend, the TransformerLens bridge and nnsight; both for the last layer's resid_post (every
  layer runs) and for a site in the middle of the network (early stop pays off);
- peak RSS of a capture of N and 10N prompts, each in a fresh process (target: within 20%).

    python benchmarks/capture.py [--layers 8] [--d-model 512] [--batch 16] [--prompts 64]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402

import alignloc  # noqa: E402
from alignloc.prompts import Prompt  # noqa: E402
from tests.tiny_models import build_arch_pair  # noqa: E402

WORDS = "the cat sat on mat and dog ran in park Alice lives Paris Bob Rome capital what is".split()


def make_prompts(n: int, seed: int = 0, min_len: int = 24, max_len: int = 48) -> list[Prompt]:
    """``n`` prompts of random words with lengths in [min_len, max_len]."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        k = int(torch.randint(min_len, max_len + 1, (1,), generator=g))
        words = [WORDS[int(j)] for j in torch.randint(len(WORDS), (k,), generator=g)]
        out.append(Prompt(id=f"b{i}", text=" ".join(words)))
    return out


def build_pair(root: Path, layers: int, d_model: int, vocab: int) -> tuple[Path, Path]:
    """A random Llama pair of the given size (unembedding of ``vocab`` rows)."""
    import transformers

    base, tuned = build_arch_pair(root, "llama", n_layers=layers, d_model=d_model)
    for d in (base, tuned):
        cfg = transformers.AutoConfig.from_pretrained(d)
        if cfg.vocab_size != vocab:
            cfg.vocab_size, cfg.max_position_embeddings = vocab, 128
            torch.manual_seed(0 if d == base else 1)
            transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(d)
    return base, tuned


def plain_forward(pair, batches) -> None:
    """Full HF forward (logits included) of both models on every batch: the reference cost."""
    with torch.inference_mode():
        for ids, mask in batches:
            for lm in (pair.base, pair.tuned):
                lm.model(input_ids=ids, attention_mask=mask, use_cache=False)


def rss_child(base: str, tuned: str, n: int, batch: int) -> None:
    """(child process) capture n prompts, print the peak RSS in MiB as JSON."""
    pair = alignloc.load_pair(base, tuned)
    with tempfile.TemporaryDirectory() as d:
        alignloc.capture(pair, make_prompts(n), out=Path(d) / "s", sites="resid_post,mlp_out",
                         positions="last", batch_size=batch, progress=False)
    print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def peak_rss(base: Path, tuned: Path, n: int, batch: int) -> float:
    """Peak RSS (MiB) of a fresh process that captures ``n`` prompts."""
    r = subprocess.run([sys.executable, __file__, "--rss-child", str(base), str(tuned), str(n), str(batch)],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])["peak_rss_mib"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--d-model", type=int, default=512)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rss-child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        b, t, n, bs = args.rss_child
        return rss_child(b, t, int(n), int(bs))

    from alignloc.models.backends import make_backend
    from alignloc.sites import parse_sites
    from alignloc.tokens import encode_prompts, pad_batch, pad_id

    root = Path(tempfile.gettempdir()) / "alignloc-bench-models"
    base, tuned = build_pair(root, args.layers, args.d_model, args.vocab)
    pair = alignloc.load_pair(str(base), str(tuned))
    prompts = make_prompts(args.prompts)
    enc = encode_prompts(pair.tokenizer, prompts, bos=True)
    batches = [pad_batch(enc.ids[i:i + args.batch], pad_id(pair.tokenizer)) for i in range(0, len(prompts), args.batch)]
    print(f"model: llama {args.layers} layers, d_model {args.d_model}, vocab {args.vocab}; "
          f"{args.prompts} prompts x ~{sum(enc.lengths) // len(prompts)} tokens, batch {args.batch}; "
          f"torch threads {torch.get_num_threads()}")
    last, mid = args.layers - 1, args.layers // 2
    cases = [(f"resid_post.{last} (every layer runs)", f"resid_post.{last}"),
             ("resid_post, all layers", "resid_post"),
             (f"resid_post.{mid} (stops mid-network)", f"resid_post.{mid}")]
    work = tempfile.mkdtemp()
    candidates = {}
    for label, spec in cases:
        sites = parse_sites(spec, args.layers)
        for name in ("hf", "bridge", "nnsight"):
            bes = [make_backend(name, pair.base), make_backend(name, pair.tuned)]

            def run(bes=bes, sites=sites):
                for ids, mask in batches:
                    for be in bes:
                        be.run(ids, mask, sites)

            candidates[(label, f"{name} backend")] = run

        def full(spec=spec):
            alignloc.capture(pair, prompts, out=Path(work) / f"s{time.perf_counter_ns()}", sites=spec,
                             batch_size=args.batch, progress=False)

        candidates[(label, "alignloc.capture (hf, store writes included)")] = full
    # Each round times the plain forward next to every candidate, so that load from other
    # processes affects numerator and denominator alike; the median ratio over rounds is printed.
    ratios = {k: [] for k in candidates}
    plain_times = []
    for fn in [lambda: plain_forward(pair, batches), *candidates.values()]:
        fn()  # warm-up
    for _ in range(args.repeats):
        for key, fn in candidates.items():
            t0 = time.perf_counter()
            plain_forward(pair, batches)
            t1 = time.perf_counter()
            fn()
            t2 = time.perf_counter()
            plain_times.append(t1 - t0)
            ratios[key].append((t2 - t1) / (t1 - t0))
    print(f"plain HF forward, both models: median {statistics.median(plain_times):.3f} s (1.00x)")
    for label, _ in cases:
        print(f"\nsites: {label}")
        for (lab, name), rs in ratios.items():
            if lab == label:
                target = "  (target <= 1.10x)" if name.startswith("alignloc") else ""
                print(f"  {name:>46}: ratio {statistics.median(rs):.2f}x (min {min(rs):.2f}, max {max(rs):.2f}){target}")

    r1 = peak_rss(base, tuned, args.prompts, args.batch)
    r10 = peak_rss(base, tuned, 10 * args.prompts, args.batch)
    print(f"\npeak RSS: {args.prompts} prompts {r1:.0f} MiB, {10 * args.prompts} prompts {r10:.0f} MiB, "
          f"ratio {r10 / r1:.2f}x (target <= 1.20x)")


if __name__ == "__main__":
    main()
