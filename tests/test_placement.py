"""Device, compute dtype and device map: resolution (the GPU paths tested on CPU), one-line errors,
weights loaded in the compute dtype, and a pair sharded by an accelerate device map (disk offload)
giving the unsharded results."""

from __future__ import annotations

import pytest
import torch

import alignloc
from alignloc.causal.graft import grafted
from alignloc.causal.patching import patch_sweep
from alignloc.cli import main
from alignloc.models.hooks import count_hooks
from alignloc.models.placement import (
    PlacementError,
    check_device,
    check_dtype,
    input_device,
    is_offloaded,
    resolve_placement,
)
from alignloc.prompts import Prompt
from alignloc.store import open_store

PROMPTS = [
    Prompt(id="a", text="The cat sat on the", target=" mat ."),
    Prompt(id="b", text="Alice lives in Paris and Bob lives in", target=" Rome"),
    Prompt(id="c", text="A dog ran in the park", target=" and the cat watched"),
]
# layer 1 lives on disk (accelerate offload), the rest on the CPU
SPLIT = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk", "model.layers.2": "cpu",
         "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}


@pytest.mark.parametrize("spec, n_cuda, mps, want", [
    ("auto", 0, False, "cpu"), ("auto", 2, False, "cuda:0"), ("auto", 0, True, "mps"), ("auto", 1, True, "cuda:0"),
    ("cpu", 4, True, "cpu"), ("cuda", 1, False, "cuda:0"), ("cuda:1", 2, False, "cuda:1"), ("mps", 0, True, "mps"),
])
def test_device_resolution(spec, n_cuda, mps, want):
    assert check_device(spec, n_cuda=n_cuda, mps=mps) == want


@pytest.mark.parametrize("spec, n_cuda, mps, message", [
    ("cuda", 0, False, "--device cuda: no CUDA device is visible (use --device cpu or auto)"),
    ("cuda:2", 2, False, "--device cuda:2: only 2 CUDA device(s) are visible (use cuda:0..cuda:1)"),
    ("mps", 1, False, "--device mps: the Apple MPS backend is not available (use --device cpu or auto)"),
    ("gpu", 1, False, "--device gpu: not a device (use one of auto | cpu | cuda | cuda:N | mps)"),
    ("cuda:-1", 1, False, "not a device"),
])
def test_device_errors_say_what_to_use(spec, n_cuda, mps, message):
    with pytest.raises(PlacementError) as e:
        check_device(spec, n_cuda=n_cuda, mps=mps)
    assert message in str(e.value)


def test_compute_dtype_resolution():
    assert check_dtype("auto", "cuda:0") == torch.bfloat16 and check_dtype("auto", "cpu") == torch.float32
    assert check_dtype("auto", "mps") == torch.float32 and check_dtype("float16", "cpu") == torch.float16
    assert check_dtype(torch.bfloat16, "cpu") == torch.bfloat16
    with pytest.raises(PlacementError, match="--compute-dtype fp8: not a compute dtype"):
        check_dtype("fp8", "cpu")
    with pytest.raises(PlacementError, match="not a compute dtype"):
        check_dtype(torch.int8, "cpu")


def test_device_map_resolution():
    p = resolve_placement("auto", "auto", "auto", n_cuda=2)
    assert p.dtype == torch.bfloat16 and p.from_pretrained_kwargs() == {"dtype": torch.bfloat16, "device_map": "auto"}
    assert resolve_placement("auto", "auto", "auto", n_cuda=0).dtype == torch.float32  # a CPU-only map: fp32
    assert resolve_placement("auto", "auto", SPLIT, n_cuda=1).dtype == torch.float32  # cpu/disk only
    assert resolve_placement("cpu", "bfloat16").from_pretrained_kwargs() == {"dtype": torch.bfloat16, "device_map": "cpu"}
    with pytest.raises(PlacementError, match="a device map places every layer itself"):
        resolve_placement("cuda:0", "auto", "auto", n_cuda=1)
    with pytest.raises(PlacementError, match="--device-map everywhere: not a device map"):
        resolve_placement("auto", "auto", "everywhere")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("argv", [["capture", "zoo:chat-sft-upper", "--out"], ["layer-diff", "zoo:chat-sft-upper", "--out"],
                                  ["demo", "--out"], ["context-prior", "zoo:base", "--out"], ["proxy-tune", "--zoo", "--out"],
                                  ["localize-bench", "--out"], ["rl-formats", "--out"], ["figures", "--out"]])
def test_cuda_without_a_gpu_is_one_line_before_loading(argv, tmp_path, capsys):
    assert main([*argv, str(tmp_path / "o"), "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "alignloc: error: --device cuda: no CUDA device is visible (use --device cpu or auto)"
    assert not (tmp_path / "o").exists()  # nothing was written: checked before any work


def test_weights_load_in_the_compute_dtype(llama_pair):
    fp32 = alignloc.load_model(str(llama_pair[0]), device="cpu", compute_dtype="float32")
    bf16 = alignloc.load_model(str(llama_pair[0]), device="cpu", compute_dtype="bfloat16")
    assert {p.dtype for p in bf16.model.parameters()} == {torch.bfloat16}
    assert bf16.provenance()["dtype"] == "bfloat16" and fp32.provenance()["dtype"] == "float32"
    for (n, a), (_, b) in zip(fp32.model.named_parameters(), bf16.model.named_parameters(), strict=True):
        assert torch.equal(a.to(torch.bfloat16), b), n  # the checkpoint cast once, on load
    assert str(input_device(bf16.model)) == "cpu"


def test_pair_sharded_with_disk_offload_matches_the_unsharded_pair(llama_pair, tmp_path):
    whole = alignloc.load_pair(*map(str, llama_pair), device="cpu")
    split = alignloc.load_pair(*map(str, llama_pair), device_map=SPLIT, offload_folder=str(tmp_path / "offload"))
    assert is_offloaded(split.base.model) and not is_offloaded(whole.base.model)
    assert split.base.model.hf_device_map["model.layers.1"] == "disk"
    assert split.base.weights_hash == whole.base.weights_hash  # offloaded weights read back for the hash
    stores = {}
    for name, pair in (("whole", whole), ("split", split)):
        stores[name] = alignloc.capture(pair, PROMPTS, out=tmp_path / name, sites="resid_post,mlp_out", positions="all")
    for side in ("base", "tuned"):
        for site in stores["whole"].sites:
            assert torch.equal(stores["whole"].get(side, site), stores["split"].get(side, site)), (side, site)
    a, b = (patch_sweep(p, PROMPTS, kind="resid_post", positions="last") for p in (whole, split))
    assert a["recovered"] == b["recovered"] and a["gap"] == b["gap"] != 0
    assert count_hooks(split.base.model) == count_hooks(whole.base.model)  # accelerate's own hooks only
    with pytest.raises(PlacementError, match="model.layers.1.* is offloaded by the device map"):
        with grafted(split.base, split.tuned, [1]):
            pass
    with grafted(split.base, split.tuned, [0]) as m:  # resident layers still graft
        assert torch.equal(m.model.model.layers[0].mlp.down_proj.weight, whole.tuned.model.model.layers[0].mlp.down_proj.weight)
    assert torch.equal(split.base.model.model.layers[0].mlp.down_proj.weight, whole.base.model.model.layers[0].mlp.down_proj.weight)


def test_store_records_the_compute_dtype(llama_pair, tmp_path):
    pair = alignloc.load_pair(*map(str, llama_pair), device="cpu", compute_dtype="bfloat16")
    st = alignloc.capture(pair, PROMPTS, out=tmp_path / "s", sites="resid_post.2")
    assert open_store(tmp_path / "s").manifest["models"]["base"]["dtype"] == "bfloat16"
    assert st.get("base", "resid_post", layer=2).dtype == torch.float32  # storage dtype is separate
