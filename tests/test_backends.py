"""Every backend (hf, bridge, nnsight) gives the activations of an independent torch reference.

The reference runs the raw HF model with ``output_hidden_states`` (resid_pre, and resid_post of
non-final layers) and explicit forward hooks on the attention / MLP modules, whose paths are
written out below per architecture (not read from ``alignloc.models.families``). The batch is
3 right-padded prompts of unequal lengths; only real-token positions are compared.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import pytest
import torch
from transformers import AutoModelForCausalLM

from alignloc.models.backends import BACKENDS, make_backend
from alignloc.models.hooks import count_hooks
from alignloc.models.pair import LoadedModel, load_model, state_dict_hash
from alignloc.models.refs import ModelRefError
from alignloc.prompts import Prompt
from alignloc.sites import SITE_KINDS, Site, SiteError
from alignloc.tokens import default_bos, encode_prompts, pad_batch, pad_id
from tests.tiny_models import ARCHS

ATOL = 1e-4
PROMPTS = [
    Prompt(id="a", text="The cat sat on the mat ."),
    Prompt(id="b", text="Alice lives in"),
    Prompt(id="c", text="A dog ran in the park and the cat watched ."),
]
# (blocks, module whose output is the attention write, module whose output is the MLP write).
REF_MODULES = {
    "gpt2": ("transformer.h", "attn", "mlp"),
    "llama": ("model.layers", "self_attn", "mlp"),
    "qwen2": ("model.layers", "self_attn", "mlp"),
    # Gemma 2 normalises each sub-block's output before adding it to the residual stream.
    "gemma2": ("model.layers", "post_attention_layernorm", "post_feedforward_layernorm"),
    "gpt_neox": ("gpt_neox.layers", "attention", "mlp"),
}


def _first(x):
    return x[0] if isinstance(x, tuple) else x


def reference_acts(
    model, arch: str, input_ids: torch.Tensor, mask: torch.Tensor, parallel: bool
) -> dict:
    """``{Site: [batch, pos, d_model]}`` at every site, from a plain forward on the raw model."""
    blocks_path, attn_name, mlp_name = REF_MODULES[arch]
    blocks = operator.attrgetter(blocks_path)(model)
    n = len(blocks)
    rec: dict = {}

    def keep(key):
        def hook(_mod, _args, out):
            rec[key] = _first(out).detach().clone()

        return hook

    handles = [blocks[-1].register_forward_hook(keep(("resid_post", n - 1)))]
    for layer, block in enumerate(blocks):
        handles.append(getattr(block, attn_name).register_forward_hook(keep(("attn_out", layer))))
        handles.append(getattr(block, mlp_name).register_forward_hook(keep(("mlp_out", layer))))
    try:
        with torch.no_grad():
            out = model(
                input_ids=input_ids, attention_mask=mask, output_hidden_states=True, use_cache=False
            )
    finally:
        for h in handles:
            h.remove()
    hs = (
        out.hidden_states
    )  # [0] embeddings, [L+1] after block L (the last one after the final norm)
    acts = {}
    for layer in range(n):
        pre, attn, mlp = hs[layer], rec[("attn_out", layer)], rec[("mlp_out", layer)]
        post = hs[layer + 1] if layer < n - 1 else rec[("resid_post", layer)]
        acts.update(
            {
                Site(layer, "resid_pre"): pre,
                Site(layer, "attn_out"): attn,
                Site(layer, "mlp_out"): mlp,
                Site(layer, "resid_post"): post,
            }
        )
        if not parallel:  # parallel blocks (NeoX) feed resid_pre to both attention and MLP
            acts[Site(layer, "resid_mid")] = pre + attn
        real = mask.bool()  # the reference itself must add up: pre + attn + mlp == post
        torch.testing.assert_close((pre + attn + mlp)[real], post[real], atol=1e-5, rtol=0)
    return acts


@dataclass
class Case:
    """One family's loaded model, batch, reference and backends (built once per module)."""

    arch: str
    loaded: LoadedModel
    input_ids: torch.Tensor
    mask: torch.Tensor
    parallel: bool
    ref: dict
    snapshot: dict
    backends: dict = field(default_factory=dict)
    _acts: dict = field(default_factory=dict)

    @property
    def sites(self) -> list[Site]:
        return sorted(self.ref, key=lambda s: s.order)

    def acts(self, name: str) -> dict:
        """The backend's activations at every site (computed once)."""
        if name not in self._acts:
            self._acts[name] = self.backends[name].run(self.input_ids, self.mask, self.sites)
        return self._acts[name]


def _snapshot(lm: LoadedModel, input_ids: torch.Tensor, mask: torch.Tensor) -> dict:
    with torch.no_grad():
        logits = lm.model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits
    return {
        "hash": state_dict_hash(lm.model.state_dict()),
        "modules": [(n, type(m).__name__) for n, m in lm.model.named_modules()],
        "attn": lm.model.config._attn_implementation,
        "logits": logits,
        "tokenizer": (
            lm.tokenizer.padding_side,
            lm.tokenizer.pad_token,
            lm.tokenizer.bos_token,
            len(lm.tokenizer),
        ),
    }


@pytest.fixture(scope="module", params=ARCHS)
def case(request, arch_pairs) -> Case:
    """A tiny base model of one family with a 3-prompt right-padded batch and its reference."""
    arch = request.param
    lm = load_model(str(arch_pairs[arch][0]))
    enc = encode_prompts(lm.tokenizer, PROMPTS, bos=default_bos(lm.tokenizer, lm.config.model_type))
    assert len(set(enc.lengths)) == len(PROMPTS), enc.lengths
    input_ids, mask = pad_batch(enc.ids, pad_id(lm.tokenizer))
    parallel = bool(getattr(lm.config, "use_parallel_residual", False))
    # A separate load: output_hidden_states leaves transformers' (inert) capture hooks behind.
    raw = AutoModelForCausalLM.from_pretrained(arch_pairs[arch][0]).eval()
    ref = reference_acts(raw, arch, input_ids, mask, parallel)
    del raw
    c = Case(arch, lm, input_ids, mask, parallel, ref, _snapshot(lm, input_ids, mask))
    c.backends = {name: make_backend(name, lm) for name in BACKENDS}  # the bridge boots once here
    return c


def _max_diffs(case: Case, acts: dict, ref: dict) -> dict[Site, float]:
    real = case.mask.bool()
    return {s: (acts[s].float() - ref[s].float())[real].abs().max().item() for s in ref}


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_matches_reference(case: Case, backend: str):
    acts = case.acts(backend)
    assert set(acts) == set(case.sites)
    batch, pos = case.input_ids.shape
    for s, a in acts.items():
        assert a.shape == (batch, pos, case.loaded.d_model), (s, a.shape)
        assert a.is_floating_point()
    diffs = _max_diffs(case, acts, case.ref)
    worst = max(diffs, key=diffs.get)
    print(f"{case.arch} {backend}: max abs diff {diffs[worst]:.2e} at {worst}")
    assert diffs[worst] <= ATOL, f"{case.arch}/{backend}: {worst} differs by {diffs[worst]:.2e}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_subset_stops_early(case: Case, backend: str):
    # Sites given out of order; the last one is a block input, so the pass can stop there.
    sites = [Site(1, "resid_pre"), Site(0, "mlp_out"), Site(0, "attn_out")]
    acts = case.backends[backend].run(case.input_ids, case.mask, sites)
    assert set(acts) == set(sites)
    diffs = _max_diffs(case, acts, {s: case.ref[s] for s in sites})
    assert max(diffs.values()) <= ATOL, diffs


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_checks_sites_before_running(case: Case, backend: str):
    """The checks all backends share (models.backends.base.CheckedRun): no site, no run; a layer past the model's
    last is refused before any forward."""
    be = case.backends[backend]
    assert be.run(case.input_ids, case.mask, []) == {}
    with pytest.raises(SiteError):
        be.run(case.input_ids, case.mask, [Site(0, "mlp_out"), Site(99, "resid_post")])


def test_resid_mid_only_where_it_exists(case: Case):
    for name, backend in case.backends.items():
        if case.parallel:
            with pytest.raises(SiteError, match="resid_mid"):
                backend.run(case.input_ids, case.mask, [Site(0, "resid_mid")])
        else:
            assert Site(0, "resid_mid") in backend.run(
                case.input_ids, case.mask, [Site(0, "resid_mid")]
            ), name


def test_hf_backend_leaves_no_hooks(case: Case):
    case.acts("hf")
    assert count_hooks(case.loaded.model) == 0
    case.acts("nnsight")  # nnsight installs inert forward controllers, no torch hooks
    assert count_hooks(case.loaded.model) == 0


def test_bridge_leaves_loaded_model_unmodified(case: Case):
    case.acts("bridge")
    after = _snapshot(case.loaded, case.input_ids, case.mask)
    for key in ("hash", "modules", "attn", "tokenizer"):
        assert after[key] == case.snapshot[key], key
    torch.testing.assert_close(after["logits"], case.snapshot["logits"], atol=0, rtol=0)
    assert case.backends["bridge"].bridge.original_model is not case.loaded.model


def test_nnsight_remote_local_equals_local(case: Case):
    simulated = make_backend("nnsight", case.loaded, remote="local")
    acts = simulated.run(case.input_ids, case.mask, case.sites)
    local = case.acts("nnsight")
    assert set(acts) == set(local)
    for s in local:
        torch.testing.assert_close(
            acts[s], local[s], atol=1e-6, rtol=0, msg=lambda m, s=s: f"{s}: {m}"
        )


def test_all_kinds_covered(case: Case):
    kinds = {s.kind for s in case.sites}
    assert kinds == set(SITE_KINDS) - ({"resid_mid"} if case.parallel else set())


def test_nnsight_remote_needs_hub_id_and_key(llama_pair, monkeypatch):
    import nnsight

    lm = load_model(str(llama_pair[0]))
    with pytest.raises(ModelRefError, match="hub id"):
        make_backend("nnsight", lm, remote=True)  # a local directory cannot go to NDIF
    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    monkeypatch.setattr(nnsight.CONFIG.API, "APIKEY", None)
    with pytest.raises(ModelRefError, match="NDIF_API_KEY"):
        make_backend("nnsight", lm, remote=True, repo_id="org/tiny-llama")
    with pytest.raises(ModelRefError, match="hub id"):
        make_backend("nnsight", lm, remote=True, repo_id=str(llama_pair[0]))
    with pytest.raises(ValueError, match="host URL"):
        make_backend("nnsight", lm, remote="yes")
