"""Run a model (with interventions built per batch) on prompts: top-1 answers, rates, perplexity."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Int

from alignloc.contextprior.data import subject_mask
from alignloc.interventions.specs import Intervention, apply
from alignloc.models.hooks import logits_at
from alignloc.models.pair import LoadedModel
from alignloc.prompts import Prompt
from alignloc.tokens import encode_prompts, pad_batch, pad_id


@dataclass
class Batch:
    """A right-padded prompt batch with the positions interventions may target."""

    prompts: list[Prompt]
    ids: Int[torch.Tensor, "b pos"]
    mask: Int[torch.Tensor, "b pos"]
    last: Int[torch.Tensor, " b"]  # index of each prompt's last token
    subject: Bool[torch.Tensor, "b pos"]  # tokens of positions.subject (all False without one)
    every_position: bool = False  # plain text: every token predicts the next one

    @property
    def last_mask(self) -> Bool[torch.Tensor, "b pos"]:
        """Bool mask of the positions that predict the answer: each prompt's last token (every real
        token of plain text, as at each step of generation)."""
        if self.every_position:
            return self.mask.bool()
        m = torch.zeros(self.ids.shape, dtype=torch.bool)
        m[torch.arange(len(self.prompts)), self.last] = True
        return m


Recipe = Callable[[Batch], list[Intervention]]


def batches(model: LoadedModel, prompts: list[Prompt], bos: bool, size: int = 32) -> Iterator[Batch]:
    """Tokenize and pad ``prompts`` in batches of ``size``."""
    for s in range(0, len(prompts), size):
        part = prompts[s : s + size]
        enc = encode_prompts(model.tokenizer, part, bos=bos, max_len=model.max_len)
        ids, mask = pad_batch(enc.ids, pad_id(model.tokenizer))
        subject = torch.stack([subject_mask(p, off, ids.shape[1]) for p, off in zip(part, enc.offsets, strict=True)])
        yield Batch(part, ids, mask, torch.tensor([n - 1 for n in enc.lengths]), subject)


@torch.no_grad()
def top1(model: LoadedModel, prompts: list[Prompt], bos: bool, recipe: Recipe | None = None,
         gated: bool = False) -> Int[torch.Tensor, " n"]:
    """The model's top next token after each prompt, with ``recipe(batch)`` interventions installed.

    ``gated``: intervene only on prompts that carry a ``context`` (the others run unchanged).
    """
    if gated and recipe is not None:
        out = torch.zeros(len(prompts), dtype=torch.long)
        with_ctx = [i for i, p in enumerate(prompts) if p.context]
        without = [i for i, p in enumerate(prompts) if not p.context]
        if with_ctx:
            out[with_ctx] = top1(model, [prompts[i] for i in with_ctx], bos, recipe)
        if without:
            out[without] = top1(model, [prompts[i] for i in without], bos, None)
        return out
    out = []
    for b in batches(model, prompts, bos):
        with apply(model, recipe(b) if recipe else []):
            logits = logits_at(model.model, model.family, b.ids, b.mask, b.last[:, None])  # [b, 1, vocab]
        out.append(logits[:, 0].argmax(-1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def first_token(tokenizer, s: str | None) -> int:
    """The first token id of a continuation (-1 for None)."""
    return tokenizer.encode(s, add_special_tokens=False)[0] if s else -1


def rate(tokenizer, answers: torch.Tensor, prompts: list[Prompt], field: str = "target") -> float:
    """Share of prompts whose top-1 token is the first token of ``prompt.<field>`` (NaN if none)."""
    if not prompts:
        return float("nan")
    want = torch.tensor([first_token(tokenizer, getattr(p, field)) for p in prompts])
    return float((answers == want).float().mean())


@torch.no_grad()
def perplexity(model: LoadedModel, texts: list[str], bos: bool, recipe: Recipe | None = None) -> float:
    """``exp`` of the mean next-token loss over all tokens of ``texts`` (last-token interventions act on every token)."""
    prompts = [Prompt(id=f"text-{i}", text=t) for i, t in enumerate(texts)]
    nll, count = 0.0, 0
    for b in batches(model, prompts, bos):
        b.every_position = True
        with apply(model, recipe(b) if recipe else []):
            every = torch.arange(b.ids.shape[1] - 1).expand(len(b.prompts), -1)  # all but the last position
            logits = logits_at(model.model, model.family, b.ids, b.mask, every)
        logp = torch.log_softmax(logits, -1).gather(-1, b.ids[:, 1:, None])[..., 0]
        keep = b.mask[:, 1:].bool()
        nll -= float(logp[keep].sum())
        count += int(keep.sum())
    return float(torch.exp(torch.tensor(nll / max(count, 1))))
