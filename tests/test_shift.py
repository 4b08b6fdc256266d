"""Representation shift: hand-computed values, and zero for an identical pair."""

from __future__ import annotations

import torch

import alignloc
from alignloc.analyses.shift import cosine_shift, layer_shift, relative_l2


def test_hand_computed():
    hb = torch.tensor([[1.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    ht = torch.tensor([[0.0, 1.0], [-1.0, -1.0], [3.0, 0.0]])
    assert torch.allclose(cosine_shift(hb, ht), torch.tensor([1.0, 2.0, 0.0]))
    assert torch.allclose(relative_l2(hb, ht), torch.tensor([2**0.5, 2.0, 0.5]))


def test_identical_pair_is_null_and_different_pair_is_not(llama_pair, tmp_path):
    same = alignloc.load_pair(str(llama_pair[0]), str(llama_pair[0]))
    prompts = [alignloc.Prompt(id=str(i), text=t) for i, t in enumerate(["The cat sat", "Alice lives in Paris ."])]
    null = layer_shift(alignloc.capture(same, prompts, out=tmp_path / "same", sites="resid_post"))
    assert [r["layer"] for r in null] == [0, 1, 2]
    assert all(r["one_minus_cos"] < 1e-6 and r["relative_l2"] == 0.0 for r in null)
    diff = alignloc.load_pair(str(llama_pair[0]), str(llama_pair[1]))
    rows = layer_shift(alignloc.capture(diff, prompts, out=tmp_path / "diff", sites="resid_post"))
    assert all(r["relative_l2"] > 0.1 for r in rows)
