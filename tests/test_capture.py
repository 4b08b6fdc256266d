"""Capture into the store: batched == unbatched, reuse, resume after a kill, corruption detection."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import alignloc
from alignloc.errors import OutputError
from alignloc.models.hooks import count_hooks
from alignloc.prompts import Prompt, save_prompts
from alignloc.store import StoreError, open_store

TEXTS = [
    "Alice lives in Paris",
    "The cat sat on the mat and the dog ran in the park .",
    "Bob",
    "User: what is the capital ? Assistant: Sure !",
    "A dog ran",
    "Alice lives in Rome and Bob lives in Paris .",
    "The mat",
]


def make_prompts(n: int = len(TEXTS)) -> list[Prompt]:
    """Prompts of unequal lengths, each with a named position."""
    out = []
    for i in range(n):
        text = TEXTS[i % len(TEXTS)] + (" ." * (i // len(TEXTS) % 5))
        first = text.split()[0]
        out.append(Prompt(id=f"p{i}", text=text, kind="other", positions={"first": first}))
    return out


@pytest.fixture(scope="module")
def pair(llama_pair):
    return alignloc.load_pair(str(llama_pair[0]), str(llama_pair[1]))


def test_batched_equals_unbatched_all_positions(pair, tmp_path):
    prompts = make_prompts()
    kw = dict(sites="resid_pre,resid_mid,resid_post,attn_out,mlp_out", positions="all")
    hooks_before = count_hooks(pair.base.model), count_hooks(pair.tuned.model)
    batched = alignloc.capture(pair, prompts, out=tmp_path / "b", batch_size=4, **kw)
    single = alignloc.capture(pair, prompts, out=tmp_path / "s", batch_size=1, **kw)
    mask = batched.mask()
    assert mask.sum().item() == sum(batched.lengths)
    worst = 0.0
    for side in ("base", "tuned"):
        for site in batched.sites:
            a, b = batched.get(side, site), single.get(side, site)
            assert a.shape == (len(prompts), max(batched.lengths), pair.base.d_model)
            worst = max(worst, (a - b).abs().max().item())
            assert a[~mask].abs().max().item() == 0.0  # padding rows are zero, not garbage
    assert worst < 1e-5
    assert count_hooks(pair.base.model) == hooks_before[0] and count_hooks(pair.tuned.model) == hooks_before[1]


def test_positions_select_the_right_token(pair, tmp_path):
    prompts = make_prompts()
    full = alignloc.capture(pair, prompts, out=tmp_path / "all", sites="resid_post.1", positions="all")
    last = alignloc.capture(pair, prompts, out=tmp_path / "last", sites="resid_post.1", positions="last")
    named = alignloc.capture(pair, prompts, out=tmp_path / "named", sites="resid_post.1", positions="first")
    idx = alignloc.capture(pair, prompts, out=tmp_path / "idx", sites="resid_post.1", positions="1")
    a = full.get("tuned", "resid_post", layer=1)
    rows = torch.arange(len(prompts))
    lengths = torch.tensor(full.lengths)
    assert torch.allclose(last.get("tuned", "resid_post", layer=1), a[rows, lengths - 1])
    assert torch.allclose(idx.get("tuned", "resid_post", layer=1), a[:, 1])
    # BOS is prepended for Llama: the first word's last token sits at index len(word tokens)
    tok = pair.tokenizer
    expected = [len(tok(p.text.split()[0], add_special_tokens=False).input_ids) for p in prompts]
    assert named.position_index == expected
    assert torch.allclose(named.get("tuned", "resid_post", layer=1), a[rows, torch.tensor(named.position_index)])
    assert last.get("base", "resid_post.1").shape == (len(prompts), pair.base.d_model)


def test_capture_matches_direct_forward(pair, tmp_path):
    """The stored last-token resid_post equals HF hidden_states of a plain forward, prompt by prompt."""
    prompts = make_prompts()
    st = alignloc.capture(pair, prompts, out=tmp_path / "s", sites="resid_post.0,resid_post.1", dtype="float32")
    tok = pair.tokenizer
    for i, p in enumerate(prompts):
        ids = torch.tensor([[tok.bos_token_id, *tok(p.text, add_special_tokens=False).input_ids]])
        with torch.no_grad():
            hs = pair.tuned.model(input_ids=ids, output_hidden_states=True).hidden_states
        assert (st.get("tuned", "resid_post", layer=1)[i] - hs[2][0, -1]).abs().max() < 1e-5


def test_store_reused_and_plan_mismatch_refused(pair, tmp_path):
    prompts = make_prompts()
    out = tmp_path / "s"
    alignloc.capture(pair, prompts, out=out, sites="resid_post")
    stamp = (out / "manifest.json").stat().st_mtime_ns
    again = alignloc.capture(pair, prompts, out=out, sites="resid_post")
    assert (out / "manifest.json").stat().st_mtime_ns == stamp  # nothing rewritten
    assert again.n_prompts == len(prompts)
    with pytest.raises(StoreError, match="differs in: sites"):
        alignloc.capture(pair, prompts, out=out, sites="mlp_out")
    assert (out / "manifest.json").stat().st_mtime_ns == stamp  # refused without touching it
    replaced = alignloc.capture(pair, prompts, out=out, sites="mlp_out", overwrite=True)
    assert [s.kind for s in replaced.sites] == ["mlp_out"] * pair.n_layers


def test_storage_dtype(pair, tmp_path):
    st = alignloc.capture(pair, make_prompts(), out=tmp_path / "h", sites="resid_post.2", dtype="bfloat16")
    ref = alignloc.capture(pair, make_prompts(), out=tmp_path / "f", sites="resid_post.2")
    a, b = st.get("base", "resid_post.2"), ref.get("base", "resid_post.2")
    assert a.dtype == torch.bfloat16 and b.dtype == torch.float32
    assert torch.allclose(a.float(), b, rtol=1e-2, atol=1e-2)
    assert not torch.equal(a.float(), b)


def test_interrupt_then_resume_equals_uninterrupted(pair, tmp_path):
    prompts = make_prompts(20)
    kw = dict(sites="resid_post,mlp_out", positions="last", batch_size=3)
    full = alignloc.capture(pair, prompts, out=tmp_path / "full", **kw)

    def boom(i):
        if i == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        alignloc.capture(pair, prompts, out=tmp_path / "cut", on_chunk=boom, **kw)
    with pytest.raises(StoreError, match="incomplete"):
        open_store(tmp_path / "cut")
    done = []
    resumed = alignloc.capture(pair, prompts, out=tmp_path / "cut", on_chunk=done.append, **kw)
    assert done == [3, 4, 5, 6]  # only the missing chunks ran
    a = [c["files"] for c in full.manifest["chunks"]]
    b = [c["files"] for c in resumed.manifest["chunks"]]
    assert a == b  # identical shard checksums


def test_resume_after_sigkill(llama_pair, tmp_path):
    """A real kill -9 mid-capture: rerunning the same command completes an identical store."""
    base, tuned = llama_pair
    prompts = tmp_path / "p.jsonl"
    save_prompts(make_prompts(150), prompts)
    cmd = [sys.executable, "-m", "alignloc.cli", "capture", str(base), str(tuned), "--prompts", str(prompts),
           "--sites", "resid_post.0,mlp_out.1", "--positions", "all", "--batch-size", "1"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([*cmd, "--out", str(tmp_path / "cut")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    manifest = tmp_path / "cut" / "manifest.json"
    deadline = time.time() + 120
    while time.time() < deadline:
        assert proc.poll() is None, f"capture exited early: {proc.stderr.read()}"
        if manifest.exists() and len(json.loads(manifest.read_text())["chunks"]) >= 3:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = len(json.loads(manifest.read_text())["chunks"])
    assert 3 <= n_before < 150, "the kill should land mid-capture"
    for out in ("cut", "full"):
        r = subprocess.run([*cmd, "--out", str(tmp_path / out)], env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    cut, full = open_store(tmp_path / "cut"), open_store(tmp_path / "full")
    assert [c["files"] for c in cut.manifest["chunks"]] == [c["files"] for c in full.manifest["chunks"]]
    assert not list((tmp_path / "cut").rglob("*.tmp"))


def test_flipped_byte_is_reported(pair, tmp_path):
    st = alignloc.capture(pair, make_prompts(), out=tmp_path / "s", sites="resid_post", batch_size=4)
    shard = tmp_path / "s" / "tuned" / "resid_post" / "chunk-00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0x01
    shard.write_bytes(bytes(data))
    fresh = open_store(tmp_path / "s")
    fresh.get("base", "resid_post", layer=0)  # other shards still read
    with pytest.raises(StoreError, match=r"chunk-00001.safetensors: checksum mismatch"):
        fresh.get("tuned", "resid_post", layer=0)
    with pytest.raises(StoreError, match="checksum mismatch"):
        open_store(tmp_path / "s").verify_all()
    with pytest.raises(StoreError, match="checksum mismatch"):
        st.get("tuned", "resid_post", layer=0)  # a store opened before the flip catches it too
    # the documented fix: delete the shard, rerun the same command; only that chunk is redone
    shard.unlink()
    done = []
    alignloc.capture(pair, make_prompts(), out=tmp_path / "s", sites="resid_post", batch_size=4,
                     on_chunk=done.append)
    assert done == [1]
    assert open_store(tmp_path / "s").verify_all() == 2 * 2


def test_truncated_manifest_is_reported(pair, tmp_path):
    alignloc.capture(pair, make_prompts(), out=tmp_path / "s", sites="resid_post.0")
    m = tmp_path / "s" / "manifest.json"
    m.write_text(m.read_text()[:50])
    with pytest.raises(StoreError, match="not valid JSON"):
        open_store(tmp_path / "s")


def test_out_dir_with_other_files_is_not_touched(pair, tmp_path):
    (tmp_path / "keep.txt").write_text("precious")
    with pytest.raises(OutputError, match="holds files alignloc did not write"):
        alignloc.capture(pair, make_prompts(), out=tmp_path, sites="resid_post.0")
    assert (tmp_path / "keep.txt").read_text() == "precious"
    assert not (tmp_path / "manifest.json").exists()
    # --overwrite writes the store next to other files, never over them
    (tmp_path / "prompts.jsonl").write_text("mine")
    with pytest.raises(OutputError, match="prompts.jsonl already there"):
        alignloc.capture(pair, make_prompts(), out=tmp_path, sites="resid_post.0", overwrite=True)
    (tmp_path / "prompts.jsonl").unlink()
    st = alignloc.capture(pair, make_prompts(), out=tmp_path, sites="resid_post.0", overwrite=True)
    assert st.verify_all() == 2 and (tmp_path / "keep.txt").read_text() == "precious"
    # replacing that store by a different capture deletes only the old capture's own files
    (tmp_path / "base" / "notes.txt").write_text("mine too")
    alignloc.capture(pair, make_prompts(), out=tmp_path, sites="mlp_out.0", overwrite=True)
    assert (tmp_path / "base" / "notes.txt").read_text() == "mine too"
    assert not (tmp_path / "base" / "resid_post").exists() and (tmp_path / "base" / "mlp_out").is_dir()


def test_a_control_pair_reuses_the_base_side_of_the_pairs_store(pair, llama_pair, tmp_path):
    from alignloc.models.pair import ModelPair

    prompts = make_prompts()
    kw = dict(sites="resid_post,mlp_out", positions="last", batch_size=3)
    first = alignloc.capture(pair, prompts, out=tmp_path / "pair", **kw)
    control = alignloc.load_model(str(llama_pair[1]))  # another model object beside the same base
    cpair = ModelPair(base=pair.base, tuned=control, name="control")
    calls = []
    handle = pair.base.model.register_forward_pre_hook(lambda m, a, k=None: calls.append(1))
    try:
        reused = alignloc.capture(cpair, prompts, out=tmp_path / "control", reuse={"base": tmp_path / "pair"}, **kw)
    finally:
        handle.remove()
    assert calls == []  # the base model never ran: its side was copied
    fresh = alignloc.capture(cpair, prompts, out=tmp_path / "fresh", **kw)
    for site in reused.sites:
        assert torch.equal(reused.get("base", site), first.get("base", site))
        assert torch.equal(reused.get("tuned", site), fresh.get("tuned", site))
    for side in ("base", "tuned"):  # byte-identical shards, as a capture of its own writes them
        for c, f in zip(reused.manifest["chunks"], fresh.manifest["chunks"], strict=True):
            assert {r: h for r, h in c["files"].items() if r.startswith(side)} == \
                   {r: h for r, h in f["files"].items() if r.startswith(side)}
    # a store of other prompts is another capture of the base: refused, nothing adopted
    with pytest.raises(StoreError, match="another capture"):
        alignloc.capture(cpair, prompts[:4], out=tmp_path / "other", reuse={"base": tmp_path / "pair"}, **kw)
