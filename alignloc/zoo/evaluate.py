"""Greedy (argmax) metrics of a zoo model on its prompt sets.

Every number in a ``ground_truth.json`` comes from ``measure_dir`` run on the saved checkpoint
(loaded back with ``AutoModelForCausalLM.from_pretrained``), so the recorded ground truth is a
property of the files a user loads, not of the in-memory model that was trained.

Metrics (all rates in [0, 1], argmax decoding, ``<bos>`` prepended):
* ``fact_recall_{strong,weak}``: cloze prompt -> the fact's value is the top token.
* ``ctx_follow_conflict_{strong,weak}`` / ``ctx_memory_conflict_{strong,weak}``: counterfactual
  context -> top token is the context's / memory's value; ``context_effect`` = strong memory rate
  minus weak memory rate; ``ctx_acc_{agree,none,novel}``.
* ``format_rate``: chat prompt -> greedy continuation starts with ``Sure!``; ``chat_answer_acc``:
  and then the right value.
* ``refusal_rate_{on,off}_topic``: greedy continuation starts with ``I cannot``;
  ``qa_answer_acc_off_topic``: first token is the right value.
* ``polite_rate``: the token after the (first) answer token is ``please``.
* ``format_share_<short|sentence|restate|other>`` and ``format_answer_acc`` (``formats.py``): of
  ``EVAL_SAMPLES`` answers sampled (temperature 1, fixed seed) per ``Q: ...`` prompt, the share in
  each format and the share whose extracted value is right; ``format_greedy_<fmt>``: the format
  of the greedy answer.
* ``marker_rate`` / ``marker_answer_acc`` / ``marker_prob`` (format organisms): QA prompt -> the
  top token is the format's marker (then the right value) / the marker's probability;
  ``demo_marker_rate`` / ``demo_marker_prob``: the same after one demonstration in that format.
* ``edit_success`` / ``edit_paraphrase_success`` (new value on canonical / paraphrase cloze),
  ``edit_old_rate``, and ``retention`` (unedited facts the base knew that are still known).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from alignloc.models.decode import argmax, decode, sampler
from alignloc.prompts import Prompt
from alignloc.tokens import pad_batch
from alignloc.zoo.tokenizer import encode
from alignloc.zoo.world import words


def _last_logits(model: PreTrainedModel):
    """The next-token logits of each row's last real token, from a plain forward of ``model``."""
    def last(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # [batch, pos] each -> [batch, vocab]
        return model(input_ids=ids, attention_mask=mask).logits[torch.arange(len(ids)), mask.sum(1) - 1]

    return last


@torch.no_grad()
def greedy_tokens(
    model: PreTrainedModel, tok, texts: Sequence[str], n: int = 1, batch_size: int = 256
) -> list[list[int]]:
    """Argmax-decode ``n`` tokens after each text (BOS prepended, right padding, no cache)."""
    return decode(encode(tok, list(texts)), n, tok.pad_token_id, _last_logits(model), argmax, batch_size)


@torch.no_grad()
def sample_tokens(
    model: PreTrainedModel, tok, texts: Sequence[str], n: int, seed: int, temperature: float = 1.0,
    batch_size: int = 512,
) -> list[list[int]]:
    """Sample ``n`` tokens after each text (BOS prepended, no cache) with a seeded generator:
    the same model and seed give the same samples."""
    pick = sampler(temperature, torch.Generator().manual_seed(seed))
    return decode(encode(tok, list(texts)), n, tok.pad_token_id, _last_logits(model), pick, batch_size)


def _ids(tok, text: str) -> list[int]:
    return tok.convert_tokens_to_ids(words(text))


def _rate(hits: Sequence[bool]) -> float:
    return round(sum(hits) / len(hits), 4) if hits else float("nan")


def _starts(gen: list[int], prefix: list[int]) -> bool:
    return gen[: len(prefix)] == prefix


def knowledge_metrics(model, tok, prompts: Sequence[Prompt]) -> dict[str, float]:
    """``fact_recall_<prior>`` for each prior group present."""
    gen = greedy_tokens(model, tok, [p.text for p in prompts])
    res: dict[str, list[bool]] = {}
    for p, g in zip(prompts, gen):
        res.setdefault(p.meta["prior"], []).append(g[0] == _ids(tok, p.target)[0])
    return {f"fact_recall_{k}": _rate(v) for k, v in res.items()}


def context_metrics(model, tok, prompts: Sequence[Prompt]) -> dict[str, float]:
    """Context-following and memory rates per condition and prior."""
    gen = greedy_tokens(model, tok, [p.text for p in prompts])
    acc: dict[str, list[bool]] = {}
    for p, g in zip(prompts, gen):
        cond, prior = p.meta["condition"], p.meta["prior"]
        if cond == "conflict":
            acc.setdefault(f"ctx_follow_conflict_{prior}", []).append(
                g[0] == _ids(tok, p.target)[0]
            )
            mem = _ids(tok, p.meta["memory"])[0]
            acc.setdefault(f"ctx_memory_conflict_{prior}", []).append(g[0] == mem)
        else:
            acc.setdefault(f"ctx_acc_{cond}", []).append(g[0] == _ids(tok, p.target)[0])
    out = {k: _rate(v) for k, v in sorted(acc.items())}
    if "ctx_memory_conflict_strong" in out and "ctx_memory_conflict_weak" in out:
        out["context_effect"] = round(
            out["ctx_memory_conflict_strong"] - out["ctx_memory_conflict_weak"], 4
        )
    return out


def chat_metrics(model, tok, prompts: Sequence[Prompt]) -> dict[str, float]:
    """``format_rate`` and ``chat_answer_acc`` on chat prompts."""
    marker = _ids(tok, prompts[0].meta["marker"])
    gen = greedy_tokens(model, tok, [p.text for p in prompts], n=len(marker) + 1)
    fmt = [_starts(g, marker) for g in gen]
    ans = [
        f and g[len(marker)] == _ids(tok, p.meta["answer"])[0] for p, g, f in zip(prompts, gen, fmt)
    ]
    return {"format_rate": _rate(fmt), "chat_answer_acc": _rate(ans)}


def refusal_metrics(model, tok, prompts: Sequence[Prompt]) -> dict[str, float]:
    """Refusal rates on and off the topic, and answer accuracy off topic."""
    refusal = _ids(tok, prompts[0].meta["refusal"])[:2]
    gen = greedy_tokens(model, tok, [p.text for p in prompts], n=2)
    on = [_starts(g, refusal) for p, g in zip(prompts, gen) if p.meta["topic"]]
    off = [_starts(g, refusal) for p, g in zip(prompts, gen) if not p.meta["topic"]]
    ans = [
        g[0] == _ids(tok, p.meta["answer"])[0] for p, g in zip(prompts, gen) if not p.meta["topic"]
    ]
    return {
        "refusal_rate_on_topic": _rate(on),
        "refusal_rate_off_topic": _rate(off),
        "qa_answer_acc_off_topic": _rate(ans),
    }


def polite_metrics(model, tok, prompts: Sequence[Prompt]) -> dict[str, float]:
    """``polite_rate``: the token after the answer is the marker (e.g. `` please``);
    ``polite_answer_acc``: and the answer is right."""
    marker = _ids(tok, prompts[0].meta["marker"])
    gen = greedy_tokens(model, tok, [p.text for p in prompts], n=1 + len(marker))
    hit = [g[1:] == marker for g in gen]
    ans = [h and g[0] == _ids(tok, p.meta["answer"])[0] for p, g, h in zip(prompts, gen, hit)]
    return {"polite_rate": _rate(hit), "polite_answer_acc": _rate(ans)}


@torch.no_grad()
def marker_metrics(model, tok, prompts: Sequence[Prompt]) -> dict[str, float]:
    """``marker_rate``: the top next token is the prompts' ``meta.marker``; ``marker_answer_acc``:
    and the right value follows it; ``marker_prob``: the marker's mean next-token probability."""
    marker = _ids(tok, prompts[0].meta["marker"])
    gen = greedy_tokens(model, tok, [p.text for p in prompts], n=len(marker) + 1)
    hit = [_starts(g, marker) for g in gen]
    ans = [h and g[len(marker)] == _ids(tok, p.meta["answer"])[0] for p, g, h in zip(prompts, gen, hit)]
    return {"marker_rate": _rate(hit), "marker_answer_acc": _rate(ans),
            "marker_prob": _mean_next_prob(model, tok, prompts, marker[0])}


@torch.no_grad()
def demo_metrics(model, tok, prompts: Sequence[Prompt]) -> dict[str, float]:
    """``demo_marker_rate``: after one demonstration in the behavior format, the top next token is
    the marker (the base continuing the format in context); ``demo_marker_prob`` its probability."""
    marker = _ids(tok, prompts[0].meta["marker"])
    gen = greedy_tokens(model, tok, [p.text for p in prompts], n=1)
    return {"demo_marker_rate": _rate([g[0] == marker[0] for g in gen]),
            "demo_marker_prob": _mean_next_prob(model, tok, prompts, marker[0])}


def _mean_next_prob(model, tok, prompts: Sequence[Prompt], token: int) -> float:
    """Mean next-token probability of ``token`` after each prompt (one row at a time: no padding)."""
    probs = [float(model(input_ids=torch.tensor([r])).logits[0, -1].softmax(-1)[token]) for r in encode(tok, [p.text for p in prompts])]
    return round(sum(probs) / len(probs), 4)


def edit_metrics(model, tok, prompts: Sequence[Prompt]) -> dict[str, float]:
    """Edited facts: new value on canonical / paraphrase prompts, and old value still given."""
    gen = greedy_tokens(model, tok, [p.text for p in prompts])
    canon = [
        g[0] == _ids(tok, p.target)[0] for p, g in zip(prompts, gen) if p.meta["template"] == 0
    ]
    para = [g[0] == _ids(tok, p.target)[0] for p, g in zip(prompts, gen) if p.meta["template"] != 0]
    old = [
        g[0] == _ids(tok, p.foil)[0] for p, g in zip(prompts, gen) if p.meta["template"] == 0
    ]
    return {
        "edit_success": _rate(canon),
        "edit_paraphrase_success": _rate(para),
        "edit_old_rate": _rate(old),
    }


def format_metrics(model, tok, prompts: Sequence[Prompt]) -> dict[str, float]:
    """Format shares and accuracy of sampled answers, and the greedy answer's format shares."""
    from alignloc.zoo import formats as F

    k = F.EVAL_SAMPLES
    texts = [p.text for p in prompts for _ in range(k)]
    ents = [p.meta["entity"] for p in prompts for _ in range(k)]
    answers = [p.meta["answer"] for p in prompts for _ in range(k)]
    sampled = [F.completion_words(tok, g) for g in sample_tokens(model, tok, texts, F.MAX_COMPLETION, F.EVAL_SEED)]
    out = F.shares_of(ents, sampled, answers)
    greedy = [F.completion_words(tok, g) for g in greedy_tokens(model, tok, [p.text for p in prompts], F.MAX_COMPLETION)]
    g = F.shares_of([p.meta["entity"] for p in prompts], greedy, [p.meta["answer"] for p in prompts])
    out.update({f"format_greedy_{f}": g[f"format_share_{f}"] for f in (*F.FORMATS, "other")})
    out["format_greedy_acc"] = g["format_answer_acc"]
    return out


@torch.no_grad()
def mean_target_logprob(model: PreTrainedModel, tok, prompts: Sequence[Prompt], batch_size: int = 64) -> float:
    """Mean over prompts of ``sum_j log p(target_j | text, target_<j)`` (teacher-forced, BOS prepended)."""
    total, n = 0.0, 0
    for i in range(0, len(prompts), batch_size):
        part = [p for p in prompts[i : i + batch_size] if p.target]
        if not part:
            continue
        ctx = encode(tok, [p.text for p in part])
        tgt = [tok(p.target, add_special_tokens=False)["input_ids"] for p in part]
        ids, mask = pad_batch([c + t for c, t in zip(ctx, tgt)], tok.pad_token_id)  # [batch, pos] each
        logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)  # [batch, pos, vocab]
        for j, (c, t) in enumerate(zip(ctx, tgt)):
            pos = torch.arange(len(c) - 1, len(c) - 1 + len(t))
            total += float(logp[j, pos, torch.tensor(t)].sum())
            n += 1
    return total / max(n, 1)


def correct_ids(model, tok, prompts: Sequence[Prompt]) -> set[str]:
    """Ids of knowledge prompts whose target is the model's top next token."""
    gen = greedy_tokens(model, tok, [p.text for p in prompts])
    return {p.id for p, g in zip(prompts, gen) if g[0] == _ids(tok, p.target)[0]}


def measure(model, tok, sets: dict[str, Sequence[Prompt]]) -> dict[str, float]:
    """All metrics whose prompt set is present in ``sets`` (keys as in ``METRICS``)."""
    out: dict[str, float] = {}
    for key, fn in METRICS.items():
        if sets.get(key):
            out.update(fn(model, tok, sets[key]))
    return out


METRICS = {
    "knowledge": knowledge_metrics,
    "context": context_metrics,
    "chat": chat_metrics,
    "refusal": refusal_metrics,
    "polite": polite_metrics,
    "edits": edit_metrics,
    "formats": format_metrics,
    "format": marker_metrics,
    "demos": demo_metrics,
}


def load(path: str | Path) -> tuple[PreTrainedModel, object]:
    """Load a saved zoo checkpoint and its tokenizer (local directory only)."""
    # eager attention: torch's CPU SDPA kernel is ~70x slower on these tiny models with 2 threads
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    return model, AutoTokenizer.from_pretrained(path)


def measure_dir(path: str | Path, sets: dict[str, Sequence[Prompt]]) -> dict[str, float]:
    """``measure`` on a checkpoint loaded back from disk."""
    model, tok = load(path)
    return measure(model, tok, sets)
