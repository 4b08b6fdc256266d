"""``patch_sweep`` equals the TransformerLens v4 patching route on the same weights (to 1e-5).

The reference runs through TransformerLens only: a ``TransformerBridge`` around each side of the
pair (alignloc's bridge backend: a private copy of the same weights, never folded or centred),
the tuned activation from the tuned bridge's ``run_with_cache`` and the base bridge run once per
cell with a forward hook on ``blocks.L.hook_<kind>``. TransformerLens' own sweeps
(``transformer_lens.patching``) run on a bridge too and are checked the same way:
``generic_activation_patch`` over layers with a patch setter for our positions, and the stock
``get_act_patch_block_every`` (resid_pre, attn_out, mlp_out x layer x position) against the
layer x position grid (``positions="each"``) on prompts of one context length. All score the
teacher-forced target log-prob.

TL's sweeps run the bridge on the token tensor alone (no attention mask). Batches are
right-padded, so under causal attention the pads come after every scored position and cannot
change it; the baselines below check that they agree with the masked HF forward.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from alignloc.analyses.outputs import full_target_logprobs, teacher_forced_batch
from alignloc.causal.patching import patch_sweep
from alignloc.models.backends.bridge import BridgeBackend, hook_name
from alignloc.models.hooks import count_hooks
from alignloc.models.pair import load_pair
from alignloc.sites import Site
from alignloc.zoo import organism_prompts

ORGANISM = "refusal-lora-L2"
KINDS = ("resid_post", "mlp_out", "attn_out")


def tl_hooks(bridge) -> int:
    """Forward hooks on the bridge's hook points (where ``run_with_hooks`` and ``hooks`` put theirs)."""
    from transformer_lens.hook_points import HookPoint

    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in bridge.modules() if isinstance(m, HookPoint))


def positions_setter(positions: str, ctx_lens: list[int]):
    """A TL patch setter ``(act, index, clean) -> act``: every position, or each row's last context token."""
    rows, last = torch.arange(len(ctx_lens)), torch.tensor([n - 1 for n in ctx_lens])

    def setter(act, index, clean):
        if positions == "all":
            act[...] = clean
        else:
            act[rows, last] = clean[rows, last]
        return act

    return setter


def tl_cell(base, tuned_cache, batch, kind: str, layer: int, positions: str) -> float:
    """Reference: one base-bridge forward with ``blocks.L.hook_<kind>`` patched from the tuned cache."""
    ids, mask, ctx, tgt = batch
    name = hook_name(Site(layer, kind))
    setter = positions_setter(positions, ctx)

    def patch(act, hook):
        return setter(act.clone(), None, tuned_cache[name])

    with torch.no_grad():
        logits = base.run_with_hooks(ids, attention_mask=mask, fwd_hooks=[(name, patch)])
    return float(full_target_logprobs(logits, ctx, tgt).mean())


def tl_sweep(base, tuned_cache, batch, kind: str, positions: str):
    """TL's ``generic_activation_patch`` over layers: ``PatchingResult`` (mean per layer, unpatched baseline)."""
    from transformer_lens import patching

    ids, _, ctx, tgt = batch
    with torch.no_grad():
        return patching.generic_activation_patch(
            base, ids, tuned_cache, lambda logits: full_target_logprobs(logits, ctx, tgt),
            patch_setter=positions_setter(positions, ctx), activation_name=kind,
            index_axis_names=("layer",), reduce="mean", baseline=True,
        )


@pytest.fixture(scope="module")
def tl(zoo_tiny):
    """The pair, 12 behavior prompts, one batch of them, and a bridge around each side."""
    pair = load_pair(f"zoo:{ORGANISM}")
    prompts = [p for p in organism_prompts(ORGANISM) if p.kind == "behavior"][:12]
    batch = teacher_forced_batch(pair.tokenizer, prompts, True, None)
    base, tuned = BridgeBackend(pair.base).bridge, BridgeBackend(pair.tuned).bridge
    with torch.no_grad():
        tuned_logits, tuned_cache = tuned.run_with_cache(batch[0], attention_mask=batch[1])
        base.run_with_cache(batch[0], attention_mask=batch[1])  # first runs wire TL's and HF's own capture hooks
    wired = {"base": count_hooks(base), "tuned": count_hooks(tuned)}
    yield SimpleNamespace(pair=pair, prompts=prompts, batch=batch, base=base, tuned=tuned,
                          tuned_logits=tuned_logits, tuned_cache=tuned_cache)
    # nothing left behind: no hook on the HF models, none on the bridges' hook points, and the
    # bridges' permanent internal wiring unchanged
    assert count_hooks(pair.base.model) == count_hooks(pair.tuned.model) == 0
    assert tl_hooks(base) == tl_hooks(tuned) == 0
    assert {"base": count_hooks(base), "tuned": count_hooks(tuned)} == wired


@pytest.mark.parametrize("positions", ["all", "last"])
def test_patch_sweep_equals_bridge_hooks_and_tl_generic_patch(tl, positions):
    ids, mask, ctx, tgt = tl.batch
    for kind in KINDS:
        sweep = patch_sweep(tl.pair, tl.prompts, kind=kind, positions=positions, batch_size=12)
        per_cell = [tl_cell(tl.base, tl.tuned_cache, tl.batch, kind, layer, positions)
                    for layer in range(tl.pair.n_layers)]
        generic = tl_sweep(tl.base, tl.tuned_cache, tl.batch, kind, positions)
        assert sweep["patched"] == pytest.approx(per_cell, abs=1e-5), kind
        assert generic.values.tolist() == pytest.approx(per_cell, abs=1e-5), kind
        # same unpatched runs on both sides: bridges (TL's one without a mask) vs plain HF
        assert float(generic.baseline) == pytest.approx(sweep["recipient"], abs=1e-5)
        assert float(full_target_logprobs(tl.tuned_logits, ctx, tgt).mean()) == pytest.approx(sweep["donor"], abs=1e-5)
        # not vacuous: some layer moves the recipient's score
        assert max(abs(x - sweep["recipient"]) for x in per_cell) > 0.05, kind
    assert tl_hooks(tl.base) == 0


def test_patch_sweep_grid_equals_tl_block_every(tl):
    """Stock ``get_act_patch_block_every`` ([3, layer, pos]) on prompts of one context length ``n``.

    Its first ``n`` positions are ``positions="each"`` (offsets ``-(n-1)..0`` from the last
    context token) and position ``n - 1`` is ``positions="last"``.
    """
    from transformer_lens import patching

    ctx = tl.batch[2]
    n = max(set(ctx), key=ctx.count)  # the commonest context length
    group = [p for p, k in zip(tl.prompts, ctx, strict=True) if k == n]
    assert len(group) >= 2
    ids, mask, gctx, tgt = teacher_forced_batch(tl.pair.tokenizer, group, True, None)
    with torch.no_grad():
        _, cache = tl.tuned.run_with_cache(ids, attention_mask=mask)
        every = patching.get_act_patch_block_every(tl.base, ids, cache,
                                                   lambda logits: full_target_logprobs(logits, gctx, tgt).mean())
    assert every.shape == (3, tl.pair.n_layers, ids.shape[1])
    for i, kind in enumerate(("resid_pre", "attn_out", "mlp_out")):
        grid = patch_sweep(tl.pair, group, kind=kind, positions="each")
        assert grid["offsets"] == list(range(-n + 1, 1))
        for layer in range(tl.pair.n_layers):
            assert grid["patched"][layer] == pytest.approx(every[i, layer, :n].tolist(), abs=1e-5), (kind, layer)
        last = patch_sweep(tl.pair, group, kind=kind, positions="last")
        assert last["patched"] == pytest.approx(every[i, :, n - 1].tolist(), abs=1e-5), kind
