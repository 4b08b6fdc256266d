"""A small deterministic training loop shared by pretraining and the post-training recipes.

Why not ``transformers.Trainer``: at this size its setup costs more than the training, and the
recipes need exact control over which parameters move (frozen ones must stay bit-identical).
Determinism: ``deterministic(seed)`` fixes the seeds, the thread count and
``torch.use_deterministic_algorithms``, and restores the previous global settings on exit.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from alignloc.zoo.provenance import thread_override

THREADS = 2  # fixed so that weights are reproducible on one machine; recorded in ground truth
IGNORE = -100


@dataclass(frozen=True)
class Example:
    """One training row: token ids and per-token labels (``IGNORE`` where no loss is taken)."""

    ids: tuple[int, ...]
    labels: tuple[int, ...]


@contextmanager
def deterministic(seed: int, threads: int = THREADS) -> Iterator[None]:
    """Seed python/numpy/torch, fix threads (``$ALIGNLOC_ZOO_THREADS`` overrides ``threads``), enable
    deterministic algorithms; restore on exit."""
    threads = thread_override() or threads
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_rng = torch.get_rng_state()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(prev_threads)
        torch.use_deterministic_algorithms(prev_det)
        torch.set_rng_state(prev_rng)


def lm_example(ids: Sequence[int], n_prompt: int = 0) -> Example:
    """A row with loss on every token after the first ``n_prompt`` ones (and never on BOS)."""
    ids = tuple(ids)
    labels = tuple(IGNORE if i < max(n_prompt, 1) else t for i, t in enumerate(ids))
    return Example(ids, labels)


def pack(rows: Sequence[Sequence[int]], seq_len: int, bos: int) -> list[Example]:
    """Greedily pack token rows (without BOS) into examples of at most ``seq_len`` tokens.

    Each packed example starts with BOS; a row that does not fit starts a new example; rows longer
    than ``seq_len - 1`` are truncated.
    """
    out: list[Example] = []
    cur: list[int] = [bos]
    for row in rows:
        row = list(row)[: seq_len - 1]
        if len(cur) + len(row) > seq_len:
            out.append(lm_example(cur))
            cur = [bos]
        cur += row
    if len(cur) > 1:
        out.append(lm_example(cur))
    return out


def collate(batch: Sequence[Example], pad: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch into ``input_ids``, ``attention_mask`` and ``labels`` tensors."""
    n = max(len(e.ids) for e in batch)
    ids = torch.full((len(batch), n), pad, dtype=torch.long)  # [batch, pos]
    labels = torch.full((len(batch), n), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), n), dtype=torch.long)
    for i, e in enumerate(batch):
        ids[i, : len(e.ids)] = torch.tensor(e.ids)
        labels[i, : len(e.ids)] = torch.tensor(e.labels)
        mask[i, : len(e.ids)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def batches(
    data: Sequence[Example] | Callable[[int], Sequence[Example]],
    batch_size: int,
    epochs: int,
    seed: int,
    bucket: int = 16,
) -> list[list[Example]]:
    """The full batch schedule: ``epochs`` shuffled passes (``data(epoch)`` may rebuild the data).

    Rows are shuffled, then each run of ``bucket * batch_size`` rows is sorted by length before
    being cut into batches (less padding), and the batches of a pass are shuffled again.
    """
    rng = random.Random(f"batches-{seed}")
    out: list[list[Example]] = []
    for ep in range(epochs):
        rows = list(data(ep) if callable(data) else data)
        rng.shuffle(rows)
        chunk = max(1, bucket) * batch_size
        cut: list[list[Example]] = []
        for i in range(0, len(rows), chunk):
            part = sorted(rows[i : i + chunk], key=lambda e: len(e.ids))
            cut += [part[j : j + batch_size] for j in range(0, len(part), batch_size)]
        rng.shuffle(cut)
        out += cut
    return out


def lr_at(step: int, total: int, lr: float, warmup: int) -> float:
    """Linear warmup, then cosine decay to 10% of ``lr``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def train(
    model: torch.nn.Module,
    schedule: Sequence[Sequence[Example]],
    pad: int,
    lr: float,
    warmup: int = 20,
    weight_decay: float = 0.0,
    params: Sequence[torch.nn.Parameter] | None = None,
    loss_fn: Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor] | None = None,
    log: Callable[[str], None] | None = None,
) -> list[float]:
    """Train ``model`` on a batch schedule with AdamW; only ``params`` (default: all) move.

    Parameters outside ``params`` get ``requires_grad=False`` for the duration, so they are never
    touched (bit-identical after training). Returns the per-step losses.
    """
    params = list(model.parameters()) if params is None else list(params)
    keep = {id(p) for p in params}
    saved = {n: p.requires_grad for n, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    model.train()
    losses: list[float] = []
    total = len(schedule)
    try:
        for step, batch in enumerate(schedule):
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, lr, warmup)
            inputs = collate(batch, pad)
            loss = loss_fn(model, inputs) if loss_fn else model(**inputs).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            losses.append(float(loss.detach()))
            if log and (step % max(1, total // 5) == 0 or step == total - 1):
                log(f"  step {step + 1}/{total} loss {losses[-1]:.3f}")
    finally:
        model.eval()
        for n, p in model.named_parameters():
            p.requires_grad_(saved[n])
    return losses


def kl_to_reference(
    reference: torch.nn.Module,
    replay: Sequence[Sequence[Example]],
    pad: int,
    weight: float,
) -> Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor]:
    """A ``loss_fn`` for ``train``: the batch's own loss plus ``weight`` x KL(reference || model)
    on the next replayed batch of pretraining text (one per step, cycling).

    The KL is per predicted token (where labels are not ``IGNORE``), averaged over them: it keeps
    the model's whole next-token distribution on pretraining text near the (frozen) reference's,
    which is what keeps closed-book facts, not just the top token of rehearsed ones.
    """
    reference.eval()
    step = iter(range(1 << 62))

    def loss_fn(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        own = model(**inputs).loss
        if weight == 0 or not replay:
            return own
        r = collate(replay[next(step) % len(replay)], pad)
        keep = r["labels"][:, 1:] != IGNORE  # [batch, pos-1]: positions that predict a real token
        with torch.no_grad():
            ref = torch.log_softmax(reference(input_ids=r["input_ids"], attention_mask=r["attention_mask"]).logits[:, :-1].float(), -1)
        cur = torch.log_softmax(model(input_ids=r["input_ids"], attention_mask=r["attention_mask"]).logits[:, :-1].float(), -1)
        kl = (ref.exp() * (ref - cur)).sum(-1)  # [batch, pos-1]
        return own + weight * kl[keep].mean()

    return loss_fn
