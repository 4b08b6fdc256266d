"""Intervention utilities: exact identities on tiny random models (no zoo needed)."""

from __future__ import annotations

import pytest
import torch

from alignloc.interventions.directions import (
    diff_in_means,
    orthogonalize_rows,
    probe_direction,
    project_out,
    unit,
)
from alignloc.interventions.specs import Ablate, PatchFrom, Scale, Steer, apply
from alignloc.interventions.weights import orthogonalized
from alignloc.models.hooks import count_hooks, edit, record
from alignloc.models.pair import load_model
from alignloc.sites import Site


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def llama(llama_pair):
    return load_model(str(llama_pair[0]))


def batch(model, n: int = 3, pos: int = 7, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(5, model.config.vocab_size, (n, pos), generator=g)


def logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model.model(input_ids=ids).logits


def resid(model, ids, kind="resid_post") -> list[torch.Tensor]:
    sites = [Site(layer, kind) for layer in range(model.config.num_hidden_layers)]
    with torch.no_grad(), record(model.model, model.family, sites) as acts:
        model.model(input_ids=ids)
    return [acts[s] for s in sites]


def test_direction_math():
    a, b = torch.randn(50, 8) + 2.0, torch.randn(40, 8)
    v = diff_in_means(a, b)
    assert torch.allclose(v, a.mean(0) - b.mean(0))
    x = torch.randn(4, 5, 8)
    assert (project_out(x, v) @ unit(v)).abs().max() < 1e-5
    assert torch.allclose(project_out(project_out(x, v), v), project_out(x, v), atol=1e-6)
    w = torch.randn(8, 3)
    assert (unit(v) @ orthogonalize_rows(w, v)).abs().max() < 1e-5
    p = probe_direction(a, b)
    assert p.norm() == pytest.approx(1.0, abs=1e-5) and float(p @ unit(v)) > 0.8  # points from b to a
    with pytest.raises(ValueError, match="zero vector"):
        unit(torch.zeros(3))


def test_steering_with_alpha_zero_is_the_identity_and_alpha_adds_exactly(llama):
    ids, d = batch(llama), llama.config.hidden_size
    v = torch.randn(d)
    with apply(llama, [Steer(Site(1, "resid_post"), v, alpha=0.0)]):
        assert torch.equal(logits(llama, ids), logits(llama, ids))
    ref = logits(llama, ids)
    with apply(llama, [Steer(Site(1, "resid_post"), v, alpha=0.0)]):
        assert torch.allclose(logits(llama, ids), ref, atol=0)
    where = torch.zeros(ids.shape, dtype=torch.bool)
    where[:, -1] = True
    before = resid(llama, ids)[1]
    with apply(llama, [Steer(Site(1, "resid_post"), v, alpha=3.0, where=where)]):
        after = resid(llama, ids)[1]
    assert torch.allclose(after[:, -1] - before[:, -1], 3.0 * v.expand(3, d), atol=1e-5)
    assert torch.equal(after[:, :-1], before[:, :-1])
    assert count_hooks(llama.model) == 0


def test_ablation_leaves_zero_projection_and_matches_weight_orthogonalization(llama):
    ids = batch(llama)
    v = resid(llama, ids)[1].mean((0, 1))  # a direction the stream really uses
    ref = logits(llama, ids)
    there = max(float((r @ unit(v)).abs().max()) for r in resid(llama, ids))
    assert there > 0.01
    with apply(llama, [Ablate(v)]):
        hooked = logits(llama, ids)
        assert (hooked - ref).abs().max() > 1e-3  # the ablation matters, so the comparisons below mean something
        for kind in ("resid_pre", "resid_post"):
            assert max(float((r @ unit(v)).abs().max()) for r in resid(llama, ids, kind)) < 1e-4 * there
    state = {k: t.clone() for k, t in llama.model.state_dict().items()}
    with orthogonalized(llama, v):
        assert count_hooks(llama.model) == 0
        assert torch.allclose(logits(llama, ids), hooked, atol=1e-5)
        assert max(float((r @ unit(v)).abs().max()) for r in resid(llama, ids)) < 1e-4 * there
    assert all(torch.equal(state[k], t) for k, t in llama.model.state_dict().items())  # restored
    with apply(llama, [Ablate(v, layers=(0, 2))]), torch.no_grad():
        part = logits(llama, ids)
    with orthogonalized(llama, v, layers=[0, 2]):
        assert torch.allclose(logits(llama, ids), part, atol=1e-4)


def test_orthogonalization_on_gpt2_conv1d_with_biases(arch_pairs):
    gpt2 = load_model(str(arch_pairs["gpt2"][0]))
    ids = batch(gpt2)
    v = resid(gpt2, ids)[0].mean((0, 1))
    with apply(gpt2, [Ablate(v)]):
        hooked = logits(gpt2, ids)
    assert (hooked - logits(gpt2, ids)).abs().max() > 1e-3
    with orthogonalized(gpt2, v):
        assert torch.allclose(logits(gpt2, ids), hooked, atol=1e-5)
        assert max(float((r @ unit(v)).abs().max()) for r in resid(gpt2, ids)) < 1e-5


def test_patch_from_another_run(llama):
    ids, other = batch(llama, seed=0), batch(llama, seed=1)
    src = resid(llama, other, "resid_pre")[0]  # the embeddings of the other tokens
    with apply(llama, [PatchFrom(Site(0, "resid_pre"), src)]):
        assert torch.allclose(logits(llama, ids), logits(llama, other), atol=1e-5)
    where = torch.zeros(ids.shape, dtype=torch.bool)
    where[:, 2] = True
    mixed = ids.clone()
    mixed[:, 2] = other[:, 2]
    with apply(llama, [PatchFrom(Site(0, "resid_pre"), src, where)]):
        assert torch.allclose(logits(llama, ids), logits(llama, mixed), atol=1e-5)
    with pytest.raises(ValueError, match="same shape"), apply(llama, [PatchFrom(Site(0, "resid_pre"), src[:, :3])]):
        logits(llama, ids)
    assert count_hooks(llama.model) == 0


def test_component_scaling(llama):
    ids = batch(llama)
    ref = logits(llama, ids)
    with apply(llama, [Scale(1, "mlp", 1.0), Scale(2, "attn", 1.0, head=0)]):
        assert torch.allclose(logits(llama, ids), ref, atol=1e-6)
    with edit(llama.model, llama.family, Site(1, "attn_out"), lambda a: a * 0.5):
        half = logits(llama, ids)
    heads = [Scale(1, "attn", 0.5, head=h) for h in range(llama.config.num_attention_heads)]
    with apply(llama, heads):  # every head halved == the attention output halved (no o_proj bias)
        assert torch.allclose(logits(llama, ids), half, atol=1e-5)
    with apply(llama, [Scale(1, "attn", 0.5)]):
        assert torch.allclose(logits(llama, ids), half, atol=1e-6)
    with apply(llama, [Scale(1, "attn", 0.0, head=0)]):
        assert not torch.allclose(logits(llama, ids), ref, atol=1e-4)
    with pytest.raises(ValueError, match="out of range"), apply(llama, [Scale(1, "attn", 2.0, head=99)]):
        pass


def test_hooks_are_removed_even_on_error(llama):
    v = torch.randn(llama.config.hidden_size)
    with pytest.raises(RuntimeError, match="boom"), apply(llama, [Steer(Site(0, "resid_post"), v), Ablate(v),
                                                               Scale(1, "mlp", 0.0), Scale(0, "attn", 2.0, head=1)]):
        assert count_hooks(llama.model) > 0
        raise RuntimeError("boom")
    assert count_hooks(llama.model) == 0


def test_bridge_hooks_give_the_same_outputs(llama):
    from alignloc.models.backends.bridge import BridgeBackend

    bridge = BridgeBackend(llama).bridge
    ids = batch(llama)
    v = torch.randn(llama.config.hidden_size)
    for spec in (Steer(Site(1, "resid_post"), v, alpha=2.0), Ablate(v), Scale(2, "mlp", 0.3)):
        with apply(llama, [spec]):
            hf = logits(llama, ids)
        with torch.no_grad():
            tl = bridge.run_with_hooks(ids, fwd_hooks=spec.tl_hooks(bridge))
        assert torch.allclose(tl, hf, atol=1e-4), type(spec).__name__
