"""The one decoding loop: each row decodes as it would alone, in order, and sampling is seeded."""

from __future__ import annotations

import torch

from alignloc.models.decode import argmax, decode, sampler

V = 11


def _counter(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Next-token logits that favour (sum of the row's real tokens) mod V: every earlier token matters, and a
    pad read by mistake would change the answer."""
    total = (ids * mask).sum(1) % V
    return torch.nn.functional.one_hot(total, V).float() * 5.0


def test_rows_decode_as_alone_in_batches_of_any_size():
    rows = [[1, 2, 3], [4], [5, 6], [7, 8, 9, 10]]
    alone = [decode([r], 4, pad=0, last_logits=_counter)[0] for r in rows]
    first = sum(rows[0]) % V
    assert alone[0][:2] == [first, (2 * first) % V]  # each step reads the whole row so far
    for bs in (1, 3, 64):
        assert decode(rows, 4, pad=0, last_logits=_counter, batch_size=bs) == alone
    assert decode(rows, 0, pad=0, last_logits=_counter) == [[], [], [], []]


def test_sampling_is_seeded_and_argmax_is_greedy():
    flat = lambda ids, mask: torch.zeros(len(ids), V)  # noqa: E731  (uniform: samples vary)
    one = decode([[1], [2]] * 4, 6, 0, flat, sampler(1.0, torch.Generator().manual_seed(3)), batch_size=3)
    two = decode([[1], [2]] * 4, 6, 0, flat, sampler(1.0, torch.Generator().manual_seed(3)), batch_size=3)
    other = decode([[1], [2]] * 4, 6, 0, flat, sampler(1.0, torch.Generator().manual_seed(4)), batch_size=3)
    assert one == two and one != other and len({t for r in one for t in r}) > 3
    assert argmax(torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]])).tolist() == [1, 0]
