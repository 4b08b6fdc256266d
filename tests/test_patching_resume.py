"""Prefix-reusing patching (``alignloc.models.resume``) on all five tiny families.

A patched forward resumes the recipient's recorded run at block L and position p. Checked here
per family (gpt2, llama, qwen2, gemma2 with a sliding window shorter than the long prompt, and
gpt_neox with its parallel blocks): resuming the unpatched run gives its logits back, the
resumed sweep equals the full-forward sweep (``reuse_prefix=False``) for every site kind, cell
layout and metric, and it equals TransformerLens v4's own patching utilities on a
``TransformerBridge`` of the same weights (``get_act_patch_block_every`` for the layer x
position grid, ``generic_activation_patch`` per layer), all to 1e-5 in fp32.
"""

from __future__ import annotations

import pytest
import torch

from alignloc.analyses.outputs import full_target_logprobs, teacher_forced_batch
from alignloc.causal.patching import pack, patch_sweep, within_sweep
from alignloc.models.backends.bridge import BridgeBackend
from alignloc.models.families import get_module
from alignloc.models.hooks import count_hooks
from alignloc.models.pair import load_pair
from alignloc.models.resume import PassThrough, entering, record_prefix, resumes_exactly
from alignloc.prompts import Prompt
from tests.tiny_models import ARCHS

NAMES, CITIES = ("Alice", "Bob"), (" Paris", " Rome")
LONG = "The cat sat on the mat . A dog ran in the park and the cat watched . Alice lives in Paris and Bob lives in"


def prompts() -> list[Prompt]:
    """Prompts of several lengths (one longer than gemma2's 32-token sliding window), with foils."""
    out = []
    for i, (name, other) in enumerate(((NAMES[0], NAMES[1]), (NAMES[1], NAMES[0]))):
        for j, lead in enumerate(("", "The cat sat on the mat . ", "A dog ran in the park . ")):
            text = f"{lead}{name} lives in"
            out.append(Prompt(id=f"p{i}{j}", text=text, kind="behavior", target=CITIES[i] + " and",
                              foil=CITIES[1 - i], corrupt_text=f"{lead}{other} lives in"))
    out.append(Prompt(id="long", text=LONG, kind="behavior", target=" Rome", foil=" Paris"))
    return out


@pytest.fixture(scope="module", params=ARCHS)
def pair(request, arch_pairs):
    """A tiny base/tuned pair of one family (different random inits: every site carries a gap)."""
    base, tuned = arch_pairs[request.param]
    return load_pair(str(base), str(tuned))


def test_resuming_the_recorded_run_gives_its_logits_back(pair):
    ids, mask, _, _ = teacher_forced_batch(pair.tokenizer, prompts(), True, None)
    assert ids.shape[1] > 32  # the long prompt reaches past gemma2's sliding window
    n = pair.n_layers
    prefix = record_prefix(pair.base.model, pair.base.family, ids, mask, list(range(n + 1)))
    lens = mask.sum(1)
    per_row = torch.stack([torch.zeros_like(lens), lens - 1, lens // 2 + torch.arange(len(lens)) % 3])  # one start per row
    assert len({int(x) for x in per_row[2]}) > 2  # rows really start at different positions
    for layer in range(n + 1):
        for start in (0, 5, ids.shape[1] - 3, *per_row):
            assert resumes_exactly(pair.base.model, pair.base.family, prefix, ids, layer, start, 1e-5), (layer, start)
    # not vacuous: another model's keys and values in the prefix do not reproduce the run
    other = record_prefix(pair.tuned.model, pair.tuned.family, ids, mask, [1])
    prefix.keys, prefix.values = other.keys, other.values
    assert not resumes_exactly(pair.base.model, pair.base.family, prefix, ids, 1, 5, 1e-5)
    assert not resumes_exactly(pair.base.model, pair.base.family, prefix, ids, 1, per_row[1], 1e-5)
    assert count_hooks(pair.base.model) == 0


def test_entering_restores_the_blocks_on_error(pair):
    blocks = get_module(pair.base.model, pair.base.family.layers)
    before = list(blocks)
    with pytest.raises(RuntimeError), entering(pair.base.model, pair.base.family, 2, torch.zeros(1, 1, 8)):
        assert isinstance(blocks[0], PassThrough) and isinstance(blocks[1], PassThrough)
        raise RuntimeError("inside")
    assert list(blocks) == before and count_hooks(pair.base.model) == 0


@pytest.mark.parametrize("positions", ["all", "last", "each"])
def test_resumed_sweep_equals_full_forward_sweep(pair, positions):
    ps = prompts()
    kinds = ("resid_pre", "attn_out", "mlp_out", "resid_post")
    if "resid_mid" in pair.base.family.sites and pair.base.family.parallel_attr is None:
        kinds += ("resid_mid",)
    for kind in kinds:
        fast = patch_sweep(pair, ps, kind=kind, positions=positions, window=6, batch_size=4)
        full = patch_sweep(pair, ps, kind=kind, positions=positions, window=6, batch_size=4, reuse_prefix=False)
        assert fast["engine"] == "resumed" and full["engine"] == "full"
        assert fast["recipient"] == pytest.approx(full["recipient"], abs=1e-5)
        flat = (lambda r: sum(r, [])) if positions == "each" else (lambda r: r)
        assert flat(fast["patched"]) == pytest.approx(flat(full["patched"]), abs=1e-5), kind
        assert max(abs(x - full["recipient"]) for x in flat(full["patched"])) > 1e-3, kind  # patches move it
    assert count_hooks(pair.base.model) == 0


@pytest.mark.parametrize("metric", ["kl", "logit_diff"])
def test_resumed_equals_full_for_other_metrics_and_within_model(pair, metric):
    ps = prompts()
    for direction in ("tuned_into_base", "base_into_tuned"):
        fast = patch_sweep(pair, ps, kind="resid_pre", positions="each", window=4, metric=metric, direction=direction)
        full = patch_sweep(pair, ps, kind="resid_pre", positions="each", window=4, metric=metric, direction=direction,
                           reuse_prefix=False)
        assert sum(fast["patched"], []) == pytest.approx(sum(full["patched"], []), abs=1e-5)
    paired = [p for p in ps if p.corrupt_text]
    fast = within_sweep(pair, paired, side="tuned", kind="mlp_out", positions="each", metric=metric)
    full = within_sweep(pair, paired, side="tuned", kind="mlp_out", positions="each", metric=metric, reuse_prefix=False)
    assert sum(fast["patched"], []) == pytest.approx(sum(full["patched"], []), abs=1e-5)
    assert fast["tokens"] == full["tokens"] and fast["tokens"][-1] == " in"


def test_resumed_sweep_equals_transformer_lens_patching(pair):
    """TL's stock sweeps on bridges of the same weights, on the prompts of one context length."""
    from transformer_lens import patching

    ps = prompts()
    ctx = teacher_forced_batch(pair.tokenizer, ps, True, None)[2]
    n = max(set(ctx), key=ctx.count)
    group = [p for p, k in zip(ps, ctx, strict=True) if k == n]
    assert len(group) >= 2
    ids, mask, gctx, tgt = teacher_forced_batch(pair.tokenizer, group, True, None)
    base, tuned = BridgeBackend(pair.base).bridge, BridgeBackend(pair.tuned).bridge

    def metric(logits):
        return full_target_logprobs(logits, gctx, tgt).mean()

    with torch.no_grad():
        _, cache = tuned.run_with_cache(ids, attention_mask=mask)
        every = patching.get_act_patch_block_every(base, ids, cache, metric)  # [3, layer, pos]
        per_layer = patching.generic_activation_patch(
            base, ids, cache, metric, patch_setter=patching.layer_pos_patch_setter,
            activation_name="resid_post", index_axis_names=("layer", "pos"))
    for i, kind in enumerate(("resid_pre", "attn_out", "mlp_out")):
        grid = patch_sweep(pair, group, kind=kind, positions="each")
        assert grid["engine"] == "resumed" and grid["offsets"] == list(range(-n + 1, 1))
        for layer in range(pair.n_layers):
            assert grid["patched"][layer] == pytest.approx(every[i, layer, :n].tolist(), abs=1e-5), (kind, layer)
    post = patch_sweep(pair, group, kind="resid_post", positions="each")
    for layer in range(pair.n_layers):
        assert post["patched"][layer] == pytest.approx(per_layer[layer, :n].tolist(), abs=1e-5), layer
    assert count_hooks(pair.base.model) == 0


def test_cells_that_write_the_recipients_own_values_are_the_unpatched_run(arch_pairs):
    """A tuned side that differs from the base only in its last block: lower cells change nothing."""
    base, _ = arch_pairs["llama"]
    pair = load_pair(str(base), str(base))
    with torch.no_grad():
        for p in get_module(pair.tuned.model, pair.tuned.family.layers)[-1].parameters():
            p.add_(0.5 * p.std() * torch.randn_like(p))
    ps = prompts()
    for kind, positions in (("mlp_out", "all"), ("attn_out", "last"), ("resid_post", "each")):
        fast = patch_sweep(pair, ps, kind=kind, positions=positions, window=4)
        full = patch_sweep(pair, ps, kind=kind, positions=positions, window=4, reuse_prefix=False)
        rows = [r[-1] for r in fast["recovered"]] if positions == "each" else fast["recovered"]
        assert all(x == 0.0 for x in rows[:-1]), kind  # exactly the unpatched run below the changed block
        assert abs(rows[-1]) > 0.05, kind
        flat = (lambda r: sum(r, [])) if positions == "each" else (lambda r: r)
        assert flat(fast["patched"]) == pytest.approx(flat(full["patched"]), abs=1e-5), kind


def test_pack_groups_items_by_length_under_a_row_cap():
    # no fixed cost: every distinct length its own forward; a large one: one forward (if max_rows allows)
    assert pack([3, 9, 3, 9, 5], max_rows=8, overhead=0.0) == [[1, 3], [4], [0, 2]]
    assert pack([3, 9, 3, 9, 5], max_rows=8, overhead=1e6) == [[1, 3, 4, 0, 2]]
    assert pack([3, 9, 3, 9, 5], max_rows=2, overhead=1e6) == [[1, 3], [4], [0, 2]]  # 5 + 2 * 3 < 2 * 5 + 3
    # the trade-off: 12 rows of 10 and 12 of 2 split when a forward costs less than the 96 saved
    assert len(pack([10] * 12 + [2] * 12, max_rows=256, overhead=64.0)) == 2
    assert len(pack([10] * 12 + [2] * 12, max_rows=256, overhead=128.0)) == 1


def test_length_groups_of_a_stacked_forward_are_fewer():
    """``in_length_groups`` returns each row's result in row order; with a stacked forward's larger fixed cost per
    call (``mixed.MIXED_OVERHEAD``) rows of 8 and 20 positions run as one group, where a plain forward's make two."""
    from alignloc.causal.metrics import in_length_groups
    from alignloc.causal.mixed import MIXED_OVERHEAD

    ends = torch.tensor([8, 20, 8, 20, 8, 20, 8, 20])
    widths: list[int] = []

    def run(rows: torch.Tensor, width: int) -> torch.Tensor:
        widths.append(width)
        return rows.float()[:, None] * 10 + width

    out = in_length_groups(ends, run)
    assert sorted(widths) == [8, 20] and out[:, 0].tolist() == [r * 10 + e for r, e in enumerate(ends.tolist())]
    widths.clear()
    out = in_length_groups(ends, run, overhead=MIXED_OVERHEAD)
    assert widths == [20] and out[:, 0].tolist() == [r * 10 + 20 for r in range(8)]


def test_window_gathers_each_rows_positions_from_its_own_start_and_pads_with_the_last():
    from alignloc.models.resume import window

    t = torch.arange(2 * 5).view(2, 5, 1)  # [b=2, pos=5, 1]: row r, position p holds 5r + p
    got = window(t, torch.tensor([1, 3]), 3)[..., 0]
    assert got.tolist() == [[1, 2, 3], [8, 9, 9]]  # row 1 runs past its end: the last position repeats
