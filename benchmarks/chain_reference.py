"""An independent reference for layer-diff's verdict on a pair nobody planted: every graft window.

It shares nothing with alignloc's causal engine: plain Hugging Face models, the tokenizer's own
``apply_chat_template``, ``generate`` for the tuned model's greedy answers, and grafts made by
copying one model's decoder-layer weights into a copy of the other.

For a window W of consecutive layers (sizes 1, 2, 4, 8; starts every max(1, size // 2) layers, the
last window flush with the top):
- sufficiency(W) = (lp(base with the tuned W) - lp(base)) / (lp(tuned) - lp(base))
- necessity(W)   = (lp(tuned) - lp(tuned with the base W)) / (lp(tuned) - lp(base))
where lp is the mean per-token log-prob of the tuned model's own greedy answer (teacher-forced),
averaged over prompts of the built-in ``chat`` suite (a seeded sample of ``--n``). Embeddings and
the final norm stay those of the model a graft starts from. Prints a table and writes JSON:

    python benchmarks/chain_reference.py BASE_DIR TUNED_DIR --n 24 --out ref.json

The summary names the smallest window that carries >= 0.5 / 0.8 of the gap each way, if any.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignloc.suites import load_suite

SIZES = (1, 2, 4, 8)


def windows(n_layers: int, sizes=SIZES) -> list[tuple[int, ...]]:
    """Every window of each size: starts every max(1, size // 2) layers, plus one flush with the top."""
    out = []
    for k in sizes:
        starts = list(range(0, n_layers - k + 1, max(1, k // 2)))
        if starts[-1] != n_layers - k:
            starts.append(n_layers - k)
        out += [tuple(range(s, s + k)) for s in starts]
    return out


def rows(tok, n: int, seed: int) -> list[list[int]]:
    """Token ids of ``n`` sampled chat-suite prompts, rendered by the tokenizer's own template."""
    prompts = load_suite("chat")
    random.Random(seed).shuffle(prompts)
    return [tok.apply_chat_template([dict(m) for m in p.messages], add_generation_prompt=True, tokenize=True,
                                    return_dict=False) for p in prompts[:n]]


@torch.inference_mode()
def answers(model, tok, ctx: list[list[int]], n_tokens: int) -> list[list[int]]:
    """Greedy continuations (``n_tokens`` at most, cut at EOS) of each row, one row at a time."""
    stop = {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")} - {None}
    out = []
    for c in ctx:
        ids = model.generate(torch.tensor([c]), max_new_tokens=n_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id or tok.eos_token_id)[0, len(c):].tolist()
        cut = next((i for i, t in enumerate(ids) if t in stop), len(ids))
        out.append(ids[:cut] or ids[:1])
    return out


@torch.inference_mode()
def mean_logprob(model, ctx: list[list[int]], ans: list[list[int]]) -> float:
    """Mean over rows of the mean per-token log-prob of ``ans`` after ``ctx`` (teacher-forced)."""
    vals = []
    for c, a in zip(ctx, ans):
        ids = torch.tensor([c + a])
        hidden = model.model(input_ids=ids).last_hidden_state[0, len(c) - 1 : len(c) + len(a) - 1]  # [answer, d]
        lp = torch.log_softmax(model.lm_head(hidden).float(), -1)  # [answer, vocab]
        vals.append(lp[torch.arange(len(a)), torch.tensor(a)].mean().item())
    return sum(vals) / len(vals)


def graft(into, source, window) -> torch.nn.Module:
    """A copy of ``into`` whose decoder layers in ``window`` carry ``source``'s weights."""
    m = copy.deepcopy(into)
    for i in window:
        m.model.layers[i].load_state_dict(source.model.layers[i].state_dict())
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("base")
    ap.add_argument("tuned")
    ap.add_argument("--n", type=int, default=24, help="chat-suite prompts (seeded sample)")
    ap.add_argument("--answer-tokens", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(a.tuned)
    base = AutoModelForCausalLM.from_pretrained(a.base, dtype=torch.float32).eval()
    tuned = AutoModelForCausalLM.from_pretrained(a.tuned, dtype=torch.float32).eval()
    ctx = rows(tok, a.n, a.seed)
    ans = answers(tuned, tok, ctx, a.answer_tokens)
    lp_b, lp_t = mean_logprob(base, ctx, ans), mean_logprob(tuned, ctx, ans)
    gap = lp_t - lp_b
    print(f"lp base {lp_b:.3f}, tuned {lp_t:.3f}, gap {gap:.3f} nats/token ({a.n} prompts)", flush=True)
    table = []
    ws = windows(base.config.num_hidden_layers)
    for j, w in enumerate(ws):
        suff = (mean_logprob(graft(base, tuned, w), ctx, ans) - lp_b) / gap
        nec = (lp_t - mean_logprob(graft(tuned, base, w), ctx, ans)) / gap
        table.append({"window": list(w), "size": len(w), "sufficiency": round(suff, 4), "necessity": round(nec, 4)})
        print(f"[{j + 1}/{len(ws)}] layers {w[0]}-{w[-1]}: sufficiency {suff:.3f} necessity {nec:.3f} "
              f"({time.time() - t0:.0f}s)", flush=True)
    summary = {}
    for level in (0.5, 0.8):
        both = [r for r in table if r["sufficiency"] >= level and r["necessity"] >= level]
        suff = [r for r in table if r["sufficiency"] >= level]
        summary[f"smallest_both_{level}"] = min(both, key=lambda r: r["size"])["window"] if both else None
        summary[f"smallest_sufficient_{level}"] = min(suff, key=lambda r: r["size"])["window"] if suff else None
    result = {"base": a.base, "tuned": a.tuned, "n_prompts": a.n, "answer_tokens": a.answer_tokens, "seed": a.seed,
              "lp_base": lp_b, "lp_tuned": lp_t, "gap": gap, "windows": table, "summary": summary,
              "seconds": round(time.time() - t0, 1)}
    a.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
