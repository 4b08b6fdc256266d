"""Gather what the activation-difference lens reads (``analyses.difflens``), and read it.

    block = what_changed(pair, prompts)      # JSON-ready: layer-diff stores it as measures.what_changed

Each model runs, one after the other, on two token sets:

- generic text: the first ``k`` tokens (BOS aside) of every line of ``suites.generic_corpus()``:
  text unrelated to any post-training, where a difference is the training's trace, not the prompt's;
- the prompts (the ``behavior`` ones when there are any, else all): every prompt token (BOS aside),
  teacher-forced with its ``target`` (in real-pair runs the tuned model's own answer).

Only running means are kept, ``[layer, d_model]`` per side and set (the mean of differences is the
difference of means over the same tokens), plus the last layer's residual at each answer position,
from which both models' output distributions are read by their final norm + unembedding (the
logit lens at the last layer is the model's output). So the block costs two forward passes per
model over short inputs, and it works with one model in memory at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import torch

from alignloc.analyses.difflens import REL_TOL, diff_lens, kl_profile, output_shift, token_kl
from alignloc.analyses.lens import lens_logits, lens_logprobs
from alignloc.analyses.outputs import target_ids
from alignloc.models.backends import make_backend
from alignloc.models.pair import SIDES, LoadedModel, ModelPair
from alignloc.prompts import Prompt
from alignloc.sites import Site
from alignloc.tokens import default_bos, encode_prompts, pad_batch, pad_id

if TYPE_CHECKING:
    from alignloc.models.residency import HeadView

DEFAULT_K = 8  # tokens of each generic line: Minder et al. read the first few (5) positions


@dataclass
class TokenSet:
    """Rows of token ids; ``start[i]:stop[i]`` are the positions averaged; ``answer[i]`` the answer's ids
    (row ``i``'s token ``stop[i] + j`` is answer token ``j``, predicted at position ``stop[i] - 1 + j``)."""

    ids: list[list[int]]
    start: list[int]
    stop: list[int]
    answer: list[list[int]] = field(default_factory=list)


def generic_set(tokenizer, bos: bool, k: int, lines: list[str]) -> TokenSet:
    """The first ``k`` tokens of each line, after BOS when the family uses one."""
    pre = [tokenizer.bos_token_id] if bos else []
    ids = [pre + tokenizer.encode(line, add_special_tokens=False)[:k] for line in lines]
    ids = [x for x in ids if len(x) > len(pre)]
    return TokenSet(ids=ids, start=[len(pre)] * len(ids), stop=[len(x) for x in ids])


def prompt_set(tokenizer, prompts: list[Prompt], bos: bool, max_len: int | None) -> TokenSet:
    """Each prompt followed by its target's tokens (cut to fit ``max_len``); its own tokens are averaged."""
    ctx = encode_prompts(tokenizer, prompts, bos=bos, max_len=max_len).ids
    tgt = [t[: max(0, max_len - len(c))] if max_len else t for c, t in zip(ctx, target_ids(tokenizer, prompts), strict=True)]
    return TokenSet(ids=[c + t for c, t in zip(ctx, tgt, strict=True)], start=[int(bos)] * len(ctx),
                    stop=[len(c) for c in ctx], answer=tgt)


def chosen_prompts(prompts: list[Prompt]) -> tuple[str, list[Prompt]]:
    """(``behavior``, the behavior prompts) when there are any, else (``all``, every prompt)."""
    beh = [p for p in prompts if p.kind == "behavior"]
    return ("behavior", beh) if beh else ("all", list(prompts))


@torch.no_grad()
def side_pass(lm: LoadedModel, backend: str, sets: dict[str, TokenSet], batch_size: int) -> dict:
    """One model over every set: ``{name: {"sum" [layer, d] float64, "norm_sum" [layer], "n": int,
    "answer": [rows of [k_i, d] last-layer residuals]}}``."""
    be = make_backend(backend, lm)
    sites = [Site(layer, "resid_post") for layer in range(lm.n_layers)]
    pid = pad_id(lm.tokenizer)
    out = {}
    for name, ts in sets.items():
        acc = {"sum": torch.zeros(lm.n_layers, lm.d_model, dtype=torch.float64),
               "norm_sum": torch.zeros(lm.n_layers, dtype=torch.float64), "n": 0, "answer": []}
        for s in range(0, len(ts.ids), batch_size):
            rows = range(s, min(s + batch_size, len(ts.ids)))
            input_ids, mask = pad_batch([ts.ids[i] for i in rows], pid)
            acts = be.run(input_ids, mask, sites)
            h = torch.stack([acts[site] for site in sites]).float()  # [layer, b, pos, d]
            del acts
            w = torch.zeros(h.shape[1], h.shape[2], device=h.device)  # [b, pos]: the averaged positions
            for b, i in enumerate(rows):
                w[b, ts.start[i]:ts.stop[i]] = 1.0
            acc["sum"] += torch.einsum("lbpd,bp->ld", h, w).double().cpu()
            acc["norm_sum"] += torch.einsum("lbp,bp->l", h.norm(dim=-1), w).double().cpu()
            acc["n"] += int(w.sum())
            for b, i in enumerate(rows):
                if ts.answer and ts.answer[i]:  # positions stop-1 .. stop-2+k predict the k answer tokens
                    acc["answer"].append(h[-1, b, ts.stop[i] - 1: ts.stop[i] - 1 + len(ts.answer[i])].cpu())
        out[name] = acc
    return out


@torch.no_grad()
def answer_divergence(head_base: LoadedModel | HeadView, head_tuned: LoadedModel | HeadView, h_base: list[torch.Tensor],
                      h_tuned: list[torch.Tensor], answers: list[list[int]], decode: Callable[[int], str],
                      k: int) -> dict | None:
    """KL(tuned || base) profile and output-probability shift along the answers (None without answers);
    one answer at a time, so memory stays ``O(answer length * d_vocab)``."""
    if not answers:
        return None
    width = max(len(a) for a in answers)
    kl = torch.zeros(len(answers), width)
    ids = torch.full((len(answers), width), -1, dtype=torch.long)
    delta = torch.zeros((), dtype=torch.float64)
    for i, a in enumerate(answers):
        lt, lb = lens_logprobs(head_tuned, h_tuned[i]), lens_logprobs(head_base, h_base[i])  # [k_i, d_vocab]
        kl[i, : len(a)] = token_kl(lt, lb)
        ids[i, : len(a)] = torch.tensor(a)
        delta = delta + (lt.exp() - lb.exp()).double().sum(0)  # [d_vocab]
    prof = kl_profile(kl, ids, decode)
    prof["output_shift"] = output_shift(delta, prof["n_positions"], decode, k)
    return prof


def decoder(tokenizer) -> Callable[[int], str]:
    """Token id -> readable text (the raw vocabulary entry when decoding gives a broken byte)."""
    def decode(i: int) -> str:
        s = tokenizer.decode([i], clean_up_tokenization_spaces=False)
        return s if "\ufffd" not in s else str(tokenizer.convert_ids_to_tokens(i))
    return decode


def what_changed(pair: ModelPair, prompts: list[Prompt], *, k: int = DEFAULT_K, top_k: int = 10,
                 batch_size: int = 16, backend: str = "hf", one_at_a_time: bool = False,
                 lines: list[str] | None = None, rel_tol: float = REL_TOL) -> dict:
    """The ``measures.what_changed`` block of ``pair`` (see the module docstring); ``lines`` replaces
    the bundled generic corpus. ``one_at_a_time``: each side is released after its pass (its final
    norm + unembedding kept), except the last."""
    from alignloc.models.residency import head_only
    from alignloc.suites import generic_corpus

    tok = pair.tokenizer
    bos = default_bos(tok, pair.base.config.model_type)
    limits = [m for m in (pair.base.max_len, pair.tuned.max_len) if m]
    max_len = min(limits) if limits else None
    kind, chosen = chosen_prompts(prompts)
    sets = {"generic": generic_set(tok, bos, k, lines if lines is not None else generic_corpus())}
    if chosen:
        sets["prompts"] = prompt_set(tok, chosen, bos, max_len)
    order = sorted(SIDES, key=lambda side: not pair.side(side).resident)  # a model in memory goes first
    runs, heads = {}, {}
    for j, side in enumerate(order):
        lm = pair.side(side)
        runs[side] = side_pass(lm, backend, sets, batch_size)
        heads[side] = lm
        if one_at_a_time and j < len(order) - 1 and lm.loader is not None:
            heads[side] = head_only(lm)
            lm.release()
    decode = decoder(tok)
    readout = partial(lens_logits, heads["tuned"])
    block = {"config": {"k_tokens": k, "top_k": top_k, "rel_tol": rel_tol, "bos_excluded": bos,
                        "readout": "tuned final norm + unembedding, minus its reading of zero"}}
    for name, ts in sets.items():
        b, t = runs["base"][name], runs["tuned"][name]
        n = max(b["n"], 1)
        diff = (t["sum"] - b["sum"]) / n  # [layer, d]: mean of tuned - base over the same tokens
        block[name] = {"n_texts": len(ts.ids), "n_tokens": b["n"]} | diff_lens(diff, b["norm_sum"] / n, readout, decode,
                                                                                top_k, rel_tol)
    if "prompts" in block:
        block["prompts"]["kind"] = kind
        answers = [a for a in sets["prompts"].answer if a]
        block["kl"] = answer_divergence(heads["base"], heads["tuned"], runs["base"]["prompts"]["answer"],
                                        runs["tuned"]["prompts"]["answer"], answers, decode, top_k)
    else:
        block["prompts"] = block["kl"] = None
    return block
