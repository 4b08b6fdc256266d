"""Loading pairs: compatibility checks, peft adapters, pickle refusal, offline hub ids."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

import alignloc
from alignloc.models.pair import PairMismatchError, state_dict_hash
from alignloc.models.refs import ModelRefError
from tests.tiny_models import build_arch_pair, make_tokenizer


def test_pair_loads_with_provenance(llama_pair):
    pair = alignloc.load_pair(str(llama_pair[0]), str(llama_pair[1]))
    prov = pair.base.provenance()
    assert prov["family"] == "llama" and prov["n_layers"] == 3 and prov["d_model"] == 64
    assert prov["weights_sha256"] != pair.tuned.provenance()["weights_sha256"]
    # the hash is a function of the weights, not of the object
    again = alignloc.load_model(str(llama_pair[0]))
    assert again.weights_hash == pair.base.weights_hash
    assert not pair.base.model.training


@pytest.mark.parametrize(
    "other, message",
    [
        (("qwen2", 3, 64), "architecture"),
        (("llama", 2, 64), "layer count"),
        (("llama", 3, 32), "d_model"),
    ],
)
def test_mismatched_pairs_name_what_differs(llama_pair, tmp_path, other, message):
    arch, n_layers, d = other
    _, tuned = build_arch_pair(tmp_path, arch, n_layers=n_layers, d_model=d)
    with pytest.raises(PairMismatchError, match=message) as e:
        alignloc.load_pair(str(llama_pair[0]), str(tuned))
    assert str(llama_pair[0]) in str(e.value) and str(tuned) in str(e.value)


def test_tokenizer_vocab_mismatch(llama_pair, tmp_path):
    """Same architecture and sizes, but a tokenizer trained on other text: refused."""
    from transformers import AutoTokenizer

    d = tmp_path / "other-vocab"
    shutil.copytree(llama_pair[1], d)
    import tests.tiny_models as tm

    old = tm.CORPUS
    tm.CORPUS = ["zebra quokka xylophone " * 3, "completely different words here"]
    try:
        make_tokenizer(d)
    finally:
        tm.CORPUS = old
    assert AutoTokenizer.from_pretrained(d).get_vocab() != AutoTokenizer.from_pretrained(llama_pair[0]).get_vocab()
    with pytest.raises(PairMismatchError, match="tokenizer vocabulary"):
        alignloc.load_pair(str(llama_pair[0]), str(d))


def test_pickle_checkpoint_refused_unless_allowed(llama_pair, tmp_path):
    d = tmp_path / "pickled"
    shutil.copytree(llama_pair[1], d)
    state = alignloc.load_model(str(llama_pair[1])).model.state_dict()
    (d / "model.safetensors").unlink()
    torch.save(state, d / "pytorch_model.bin")
    with pytest.raises(ModelRefError, match="pickle") as e:
        alignloc.load_pair(str(llama_pair[0]), str(d))
    assert "pytorch_model.bin" in str(e.value) and "--allow-pickle" in str(e.value)
    pair = alignloc.load_pair(str(llama_pair[0]), str(d), allow_pickle=True)
    assert pair.tuned.weights_hash == state_dict_hash(state)
    # the same through a LoadOptions, and a keyword replaces its field
    opts = alignloc.LoadOptions(device="cpu", allow_pickle=True)
    assert alignloc.load_pair(str(llama_pair[0]), str(d), opts).tuned.weights_hash == state_dict_hash(state)
    with pytest.raises(ModelRefError, match="pickle"):
        alignloc.load_pair(str(llama_pair[0]), str(d), opts, allow_pickle=False)


def test_load_options_build_from_keywords_and_refuse_unknown_ones():
    from alignloc.models.load_options import LoadOptions

    opts = LoadOptions.build(LoadOptions(device="cpu"), compute_dtype="float32", device_map="none")
    assert opts == LoadOptions(device="cpu", compute_dtype="float32") and opts.device_map is None
    assert opts.placement() == {"device": "cpu", "compute_dtype": "float32", "device_map": None, "offload_folder": None}
    with pytest.raises(TypeError, match="unknown load option.*devcie"):
        LoadOptions.build(devcie="cpu")
    with pytest.raises(TypeError, match="unknown load option"):
        alignloc.load_model("zoo:base", devcie="cpu")
    with pytest.raises(TypeError, match="must be a LoadOptions"):
        LoadOptions.build({"device": "cpu"})
    with pytest.raises(AttributeError):  # frozen: one value per run
        opts.device = "cuda"


def test_peft_adapter_is_merged_onto_base(llama_pair, tmp_path):
    from peft import LoraConfig, get_peft_model

    base_dir = llama_pair[0]
    base = alignloc.load_model(str(base_dir)).model
    torch.manual_seed(3)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], layers_to_transform=[1],
                     init_lora_weights=False)
    peft_model = get_peft_model(base, cfg)
    peft_model.save_pretrained(tmp_path / "adapter")
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["r"] == 4
    expected = peft_model.merge_and_unload().state_dict()

    pair = alignloc.load_pair(str(base_dir), str(tmp_path / "adapter"))
    got = pair.tuned.model.state_dict()
    base_state = pair.base.model.state_dict()
    changed = {k for k in got if not torch.equal(got[k], base_state[k])}
    assert changed == {"model.layers.1.self_attn.q_proj.weight", "model.layers.1.self_attn.v_proj.weight"}
    assert all(torch.allclose(got[k], expected[k], atol=1e-6) for k in changed)
    assert pair.tuned.adapter is not None and pair.tuned.provenance()["adapter"]
    with pytest.raises(ModelRefError, match="peft adapter"):
        alignloc.load_model(str(tmp_path / "adapter"))


def test_hub_id_offline_fails_fast(llama_pair, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelRefError, match="offline"):
        alignloc.load_pair(str(llama_pair[0]), "meta-llama/Llama-3.1-8B")


def test_hub_unreachable_fails_fast(llama_pair, monkeypatch):
    """Without the offline flag, an unreachable hub is detected by one quick connection attempt."""
    import time

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://alignloc-test.invalid")
    t = time.perf_counter()
    with pytest.raises(ModelRefError, match="unreachable"):
        alignloc.load_model("someorg/somemodel")
    assert time.perf_counter() - t < 10


@pytest.mark.parametrize("ref, message", [
    ("/nonexistent/dir", "no such directory"),
    ("zoo:x:middle", "'base' or 'tuned'"),
])
def test_bad_references(ref, message):
    with pytest.raises(ModelRefError, match=message):
        alignloc.load_model(ref)


def test_not_a_model_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ModelRefError, match="no config.json"):
        alignloc.load_model(str(tmp_path))



@pytest.mark.parametrize("weights, config, needle", [
    (2, 3, "9 tensors the model needs are missing from the checkpoint (model.layers.2."),
    (3, 2, "9 tensors in the checkpoint are not used by the model (model.layers.2."),
])
def test_weights_that_do_not_match_config_json_are_an_error(tmp_path, capsys, weights, config, needle):
    """config.json and the weights disagree on the layer count: one error line naming the tensors, not a
    layer of random weights (or tensors silently dropped) and exit 0."""
    from alignloc.cli import main
    from tests.hostile_inputs import GOOD, assert_one_error, jsonl, tree

    model, _ = build_arch_pair(tmp_path / "m", "llama", n_layers=weights)
    cfg = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": config}))
    (tmp_path / "p.jsonl").write_text(jsonl(*GOOD))
    before = tree(tmp_path)
    rc = main(["capture", str(model), str(model), "-p", str(tmp_path / "p.jsonl"), "-o", str(tmp_path / "acts")])
    line = assert_one_error(rc, capsys.readouterr().err, needle)
    assert line.startswith(f"alignloc: error: {model}: ") and f"config.json says {config} layers" in line
    assert tree(tmp_path) == before


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PAYLOAD-RAN",))


@pytest.mark.parametrize("how, needle", [
    ("torch.save", "it names the global posix.system"),
    ("pickle protocol 4", "it uses pickle opcode 149"),
])
def test_allow_pickle_on_a_malicious_pickle_is_one_line_saying_what_was_refused(llama_pair, tmp_path, capsys, recwarn,
                                                                                 monkeypatch, how, needle):
    """--allow-pickle still loads through torch's weights-only unpickler; what it refused and what to do is one
    line (no torch warning, no torch text cut mid-word), and the payload never runs."""
    import pickle

    from alignloc.cli import main
    from tests.hostile_inputs import GOOD, assert_one_error, jsonl

    monkeypatch.chdir(tmp_path)
    d = tmp_path / "evil"
    shutil.copytree(llama_pair[1], d, ignore=shutil.ignore_patterns("model.safetensors"))
    state = {"model.embed_tokens.weight": torch.zeros(2), "x": _Payload()}
    if how == "torch.save":
        torch.save(state, d / "pytorch_model.bin")
    else:
        (d / "pytorch_model.bin").write_bytes(pickle.dumps(state, protocol=4))
    (tmp_path / "p.jsonl").write_text(jsonl(*GOOD))
    rc = main(["capture", str(llama_pair[0]), str(d), "-p", "p.jsonl", "-o", "acts", "--allow-pickle"])
    line = assert_one_error(rc, capsys.readouterr().err, f"{d}: pytorch_model.bin: torch's weights-only unpickler refused it: "
                                                         f"{needle}")
    assert "safetensors" in line and "do not load it" in line and "complete checkpoint" not in line
    assert not [w for w in recwarn if "torch" in w.filename], [str(w.message) for w in recwarn]
    assert not (tmp_path / "PAYLOAD-RAN").exists() and not (tmp_path / "acts").exists()


def test_benign_unmatched_tensors_are_not_errors(arch_pairs):
    """Recomputed buffers and an output embedding tied to the input one are left out; an untied one is not."""
    from alignloc.models.loading import unmatched

    gpt2 = alignloc.load_model(str(arch_pairs["gpt2"][0])).model  # ties lm_head to the input embedding
    info = {"missing_keys": {"lm_head.weight", "transformer.h.0.attn.bias"},
            "unexpected_keys": {"model.rotary_emb.inv_freq", "transformer.h.0.attn.masked_bias", "position_ids"}}
    assert unmatched(gpt2, info) == ([], [])
    llama = alignloc.load_model(str(arch_pairs["llama"][0])).model  # its own lm_head
    assert unmatched(llama, {"missing_keys": {"lm_head.weight"}, "unexpected_keys": set()}) == (["lm_head.weight"], [])


def test_a_zoo_reference_without_the_zoo_says_what_to_import(monkeypatch):
    """models/ never imports the zoo: with no zoo registered, zoo:NAME fails with what to do."""
    from alignloc.models import refs
    from alignloc.models.pair import load_pair

    monkeypatch.setattr(refs, "_ZOO", [])
    with pytest.raises(ModelRefError, match="import alignloc.zoo"):
        load_pair("zoo:chat-sft-upper")
