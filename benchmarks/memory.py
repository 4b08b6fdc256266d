"""Peak memory of a layer-diff against the size of one model (goal: <= one model + one batch + the
store's batch, with ``one_at_a_time``).

``PeakMemory`` (psutil RSS sampled every 10 ms; ``torch.cuda.max_memory_allocated`` on a GPU) and
``model_bytes`` are importable by other benchmarks:

    with PeakMemory() as peak:
        layer_diff(...)
    print(peak.rss_delta_mib, peak.cuda_peak_mib)

Run as a script, it builds a random base/tuned pair of SmolLM2-135M's configuration (fp32, about
0.5 GB a side; cached under --cache) and runs ``layer_diff`` (no probes, no causal) in a fresh
process per mode, printing the peak RSS above the process's RSS before loading, in units of one
model's weights; then the time and peak RSS of scored-position logits against full-sequence
logits of one forward (``scored_vs_full``):

    python benchmarks/memory.py [--prompts 16] [--batch 8] [--cache /tmp/alignloc-memory-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402

MIB = 2**20
SMOLLM2_135M = dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                    intermediate_size=1536, vocab_size=49152, tie_word_embeddings=True, max_position_embeddings=2048)


class PeakMemory:
    """Context manager: the process's peak RSS (and CUDA allocation) while the block runs."""

    def __init__(self, interval: float = 0.01):
        self.interval = interval
        self.rss_start_mib = self.rss_peak_mib = 0.0
        self.cuda_peak_mib: float | None = None

    def __enter__(self) -> PeakMemory:
        import psutil

        self._proc, self._stop = psutil.Process(), threading.Event()
        self.rss_start_mib = self.rss_peak_mib = self._proc.memory_info().rss / MIB
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

        def sample():
            while not self._stop.wait(self.interval):
                self.rss_peak_mib = max(self.rss_peak_mib, self._proc.memory_info().rss / MIB)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.rss_peak_mib = max(self.rss_peak_mib, self._proc.memory_info().rss / MIB)
        if torch.cuda.is_available():
            self.cuda_peak_mib = torch.cuda.max_memory_allocated() / MIB

    @property
    def rss_delta_mib(self) -> float:
        """Peak RSS above the RSS when the block started."""
        return self.rss_peak_mib - self.rss_start_mib


def model_bytes(model: torch.nn.Module) -> int:
    """Bytes of a model's parameters and buffers (tied tensors counted once)."""
    seen, total = set(), 0
    for t in [*model.parameters(), *model.buffers()]:
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


def build_pair(root: Path) -> tuple[Path, Path]:
    """A random pair of SmolLM2-135M's configuration (tuned = base + noise on the upper blocks), saved once."""
    import transformers as T

    from tests.tiny_models import make_tokenizer

    base, tuned = root / "base", root / "tuned"
    if (tuned / "config.json").exists():
        return base, tuned
    tok = make_tokenizer(root / "tok")
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = T.LlamaForCausalLM(T.LlamaConfig(**SMOLLM2_135M, **ids)).eval()
    model.save_pretrained(base)
    tok.save_pretrained(base)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".layers." in name and int(name.split(".layers.")[1].split(".")[0]) >= 20:
                p.add_(0.02 * torch.randn_like(p))
    model.save_pretrained(tuned)
    tok.save_pretrained(tuned)
    return base, tuned


def prompts(n: int) -> list:
    """``n`` prompts with targets and labels (behavior / knowledge alternating)."""
    from alignloc.prompts import Prompt

    texts = ["The cat sat on the", "Alice lives in Paris and Bob lives in", "A dog ran in the park and",
             "User: what is the capital ? Assistant:"]
    return [Prompt(id=f"p{i}", text=texts[i % 4] + " ." * (i // 4), kind="behavior" if i % 2 else "knowledge",
                   target=" Paris", label=i % 2) for i in range(n)]


def child(base: str, tuned: str, out: str, n: int, batch: int, one: bool) -> None:
    """One layer-diff in this process; prints JSON with the peak memory and one model's size."""
    torch.set_num_threads(1)
    import transformers.models.llama.modeling_llama  # noqa: F401 (imported before the baseline is taken)

    import alignloc
    from alignloc.experiments.layerdiff import layer_diff

    ps = prompts(n)
    with PeakMemory() as peak:
        pair = alignloc.load_pair(base, tuned, device="cpu", compute_dtype="float32", one_at_a_time=one)
        layer_diff(pair, ps, out, n_boot=50, probes=False, write=False, batch_size=batch, overwrite=True,
                   one_at_a_time=one)
    size = model_bytes(pair.side("base" if pair.base.resident else "tuned").model) / MIB
    print(json.dumps({"one_at_a_time": one, "model_mib": size, "rss_start_mib": peak.rss_start_mib,
                      "rss_peak_mib": peak.rss_peak_mib, "rss_delta_mib": peak.rss_delta_mib,
                      "cuda_peak_mib": peak.cuda_peak_mib}))


def scored_vs_full(base: str, n: int = 16, words: int = 60, rounds: int = 5) -> dict:
    """Time ratio and peak RSS of the scored-position logits (``scored_logits``) against the full
    ``[batch, pos, d_vocab]`` logits of one forward, on ``n`` prompts of ``words`` random words."""
    import statistics
    import time

    import alignloc
    from alignloc.causal.metrics import scored_batch, scored_logits
    from alignloc.prompts import Prompt

    lm = alignloc.load_model(base, device="cpu", compute_dtype="float32")
    vocab = "the cat sat on mat and dog ran in park Alice lives Paris Bob Rome capital what is".split()
    g = torch.Generator().manual_seed(0)
    ps = [Prompt(id=str(i), text=" ".join(vocab[int(j)] for j in torch.randint(len(vocab), (words,), generator=g)),
                 target=" Paris") for i in range(n)]
    b = scored_batch(lm.tokenizer, ps, True, None)
    full = lambda: lm.model(input_ids=b.ids, attention_mask=b.mask, use_cache=False).logits  # noqa: E731
    ratios = []
    with torch.no_grad():
        full(), scored_logits(lm, b)
        for _ in range(rounds):
            t0 = time.perf_counter()
            full()
            t1 = time.perf_counter()
            scored_logits(lm, b)
            ratios.append((time.perf_counter() - t1) / (t1 - t0))
        with PeakMemory() as pf:
            full()
        with PeakMemory() as ps_:
            scored_logits(lm, b)
    return {"batch": tuple(b.ids.shape), "time_ratio": statistics.median(ratios), "full_mib": pf.rss_delta_mib,
            "scored_mib": ps_.rss_delta_mib}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/alignloc-memory-bench"))
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        base, tuned, one = args.child
        return child(base, tuned, str(args.cache / f"run-{one}"), args.prompts, args.batch, one == "one")
    torch.set_num_threads(1)
    base, tuned = build_pair(args.cache)
    rows = []
    for mode in ("both", "one"):
        r = subprocess.run([sys.executable, __file__, "--child", str(base), str(tuned), mode, "--prompts",
                            str(args.prompts), "--batch", str(args.batch), "--cache", str(args.cache)],
                           capture_output=True, text=True, check=True)
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    print(f"layer-diff, SmolLM2-135M config (random weights, fp32), {args.prompts} prompts, batch {args.batch}")
    print("mode                 one model  peak RSS - start  in models")
    for r in rows:
        mode = "one model at a time" if r["one_at_a_time"] else "both resident"
        print(f"{mode:<20} {r['model_mib']:7.0f} MiB  {r['rss_delta_mib']:10.0f} MiB  {r['rss_delta_mib'] / r['model_mib']:8.2f}")
    s = scored_vs_full(str(base))
    print(f"scored-position logits vs full logits, batch {s['batch']}: time {s['time_ratio']:.2f}x (median of 5), "
          f"peak RSS above start {s['scored_mib']:.0f} MiB vs {s['full_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
