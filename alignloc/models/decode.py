"""Decoding ``n`` tokens after rows of token ids, one token per step, with any next-token function.

The loop recomputes the whole right-padded batch at each step (no KV cache), so a row decodes exactly as
it would alone; what a step's logits come from (one checkpoint, a proxy-tuned combination of three) is the
caller's ``last_logits``, and how a token is chosen is ``pick`` (``argmax`` or a seeded ``sampler``).
``layerdiff.answers`` decodes real models' answers with a KV cache instead (long answers on big models).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Float, Int

from alignloc.tokens import pad_batch

LastLogits = Callable[[Int[torch.Tensor, "b pos"], Int[torch.Tensor, "b pos"]], Float[torch.Tensor, "b vocab"]]
Pick = Callable[[Float[torch.Tensor, "b vocab"]], Int[torch.Tensor, " b"]]


def argmax(last: Float[torch.Tensor, "b vocab"]) -> Int[torch.Tensor, " b"]:
    """Greedy choice: the top token of each row."""
    return last.argmax(-1)


def sampler(temperature: float, generator: torch.Generator) -> Pick:
    """Seeded sampling at ``temperature`` from each row's logits (or log-probs: the softmax is the same)."""
    def pick(last: Float[torch.Tensor, "b vocab"]) -> Int[torch.Tensor, " b"]:
        return torch.multinomial(torch.softmax(last.float() / temperature, -1), 1, generator=generator)[:, 0]

    return pick


@torch.no_grad()
def decode(rows: list[list[int]], n: int, pad: int, last_logits: LastLogits, pick: Pick = argmax,
           batch_size: int = 64) -> list[list[int]]:
    """``n`` new tokens after each row of ids, batches of ``batch_size`` rows in order; ``last_logits(ids,
    mask)`` gives the next-token logits of the last real token of each row of a right-padded batch."""
    out: list[list[int]] = []
    for s in range(0, len(rows), batch_size):
        batch = rows[s : s + batch_size]
        new: list[list[int]] = [[] for _ in batch]
        for _ in range(n):
            ids, mask = pad_batch([r + g for r, g in zip(batch, new, strict=True)], pad)  # [b, pos] each
            for j, t in enumerate(pick(last_logits(ids, mask)).tolist()):
                new[j].append(t)
        out += new
    return out
