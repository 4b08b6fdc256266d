"""oneDNN's packed linear kernel (``alignloc.models.linear``): the same products as torch's, and a packed copy that
follows every change of the weight."""

import copy
import gc
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from alignloc.models import linear
from alignloc.models.linear import MIN_WEIGHT, use_packed_linears

pytestmark = pytest.mark.skipif(not linear.available(), reason="this torch build has no oneDNN packed linear")


def _net(seed: int = 0) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.GELU(), torch.nn.Linear(512, 256, bias=False),
                               torch.nn.Linear(256, 8))  # the last is below MIN_WEIGHT


def _reference(net: torch.nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    h = x
    for m in net:
        h = F.linear(h, m.weight, m.bias) if isinstance(m, torch.nn.Linear) else m(h)
    return h


def _packed(net) -> list[int]:
    return [len(m.__dict__["_alignloc_packs"].entries) if "_alignloc_packs" in m.__dict__ else 0
            for m in net if isinstance(m, linear.PackedLinear)]


def test_same_products_as_torch_on_any_input_shape():
    net = _net()
    assert use_packed_linears(net) == 2 and type(net[3]) is torch.nn.Linear  # 256 x 8 < MIN_WEIGHT
    assert use_packed_linears(net) == 2  # again: nothing changes
    with torch.no_grad():
        for x in (torch.randn(7, 256), torch.randn(3, 5, 256), torch.randn(5, 3, 256).transpose(0, 1),
                  torch.randn(4, 512)[:, ::2], torch.randn(0, 256)):
            got, want = net(x), _reference(net, x)
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert _packed(net) == [1, 1]  # the packed kernel ran (one copy per layer)
    assert MIN_WEIGHT == 128 * 512


def test_gradients_take_torchs_kernel():
    net = _net()
    use_packed_linears(net)
    x = torch.randn(4, 256, requires_grad=True)
    net(x).sum().backward()  # the packed op has no backward: this fails if it ran
    assert x.grad is not None and _packed(net) == [0, 0]
    with torch.no_grad():
        net(x)
    assert _packed(net) == [1, 1]


def test_packed_copy_follows_the_weight():
    net, other = _net(0), _net(1)
    use_packed_linears(net)
    x = torch.randn(6, 256)
    with torch.no_grad():
        net(x)
        net[0].weight[0, 5] += 1.0  # one value, in place: the version counter moves (the sample misses it)
        torch.testing.assert_close(net(x), _reference(net, x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(net(x), _reference(net, x), rtol=1e-5, atol=1e-5)
        net[0].weight.data[:, :] = other[0].weight  # through .data: the counter does not move, the values do
        torch.testing.assert_close(net(x), _reference(net, x), rtol=1e-5, atol=1e-5)
        a, b = net[2].weight, other[2].weight  # storages exchanged, as grafting does, and back
        for _ in range(2):
            a.data, b.data = b.data, a.data
            torch.testing.assert_close(net(x), _reference(net, x), rtol=1e-5, atol=1e-5)
    assert _packed(net) == [1, 2]  # the exchanged layer keeps both storages' copies


def test_budget_and_opt_out(monkeypatch):
    net = _net()
    use_packed_linears(net)
    monkeypatch.setattr(linear, "budget_bytes", lambda: 0)
    x = torch.randn(3, 256)
    with torch.no_grad():
        torch.testing.assert_close(net(x), _reference(net, x), rtol=1e-5, atol=1e-5)
    assert _packed(net) == [0, 0]  # past the budget: torch's kernel, nothing held
    env = {**os.environ, "ALIGNLOC_LINEAR": "torch"}
    code = ("import torch; from alignloc.models.linear import use_packed_linears as u; "
            "print(u(torch.nn.Linear(256, 512)))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"


def test_copies_start_empty_and_free_their_bytes():
    net = _net()
    use_packed_linears(net)
    with torch.no_grad():
        net(torch.randn(2, 256))
    gc.collect()  # other tests' layers
    held = linear._held[0]
    twin = copy.deepcopy(net)  # packed copies are not copied: the twin makes its own
    assert _packed(twin) == [0, 0] and linear._held[0] == held
    x = torch.randn(2, 256)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), net(x), rtol=0, atol=0)
    assert linear._held[0] > held
    del twin
    assert linear._held[0] == held


def test_loaded_models_get_it():
    from transformers import LlamaConfig, LlamaForCausalLM

    from alignloc.models.families import family_for
    from alignloc.models.pair import LoadedModel

    cfg = LlamaConfig(hidden_size=128, intermediate_size=512, num_hidden_layers=1, num_attention_heads=4,
                      vocab_size=64)
    model = LlamaForCausalLM(cfg).eval()
    LoadedModel(ref="tiny", model=model, tokenizer=None, family=family_for(cfg))
    got = {n for n, m in model.named_modules() if type(m) is linear.PackedLinear}
    assert got == {f"model.layers.0.mlp.{p}" for p in ("gate_proj", "up_proj", "down_proj")}  # 128 x 128 is below
