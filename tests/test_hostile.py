"""Hostile and careless inputs to every command: one error line, exit 2, nothing touched; Ctrl-C is exit 130.

Each parametrised case runs ``alignloc.cli.main(argv)`` in-process inside a fresh folder that holds
the case's inputs, and asserts: exit code 2, exactly one line on stderr starting ``alignloc: error:``
(no traceback), the expected words in it, and that the folder's files (and the folder tree) are
byte-for-byte what they were. Every check fires before a model is loaded, so the module is fast.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from alignloc.cli import main
from tests.hostile_inputs import (
    GOOD,
    Inputs,
    assert_one_error,
    jsonl,
    manifest_or_none,
    tree,
    wait_stopped,
)


@pytest.fixture(scope="module")
def store_template(llama_pair, tmp_path_factory):
    """A small complete store captured from the tiny Llama pair (copied and damaged by the cases)."""
    import alignloc
    from alignloc.prompts import load_prompts

    root = tmp_path_factory.mktemp("store-template")
    (root / "p.jsonl").write_text(jsonl(*GOOD))
    pair = alignloc.load_pair(*map(str, llama_pair))
    alignloc.capture(pair, load_prompts(root / "p.jsonl"), out=root / "s", sites="resid_post.0,mlp_out.1", batch_size=1)
    return root / "s"


CAPTURE = ["capture", "{base}", "{tuned}", "-p", "{prompts}", "-o", "{d}/out"]
LAYER_DIFF = ["layer-diff", "{base}", "{tuned}", "-p", "{prompts}", "--control", "none", "-o", "{d}/rep"]
CP = ["context-prior", "{base}", "-p", "{prompts}", "-o", "{d}/cp"]
PT = ["proxy-tune", "--large-base", "{base}", "--small-base", "{base}", "--small-tuned", "{tuned}", "-p", "{prompts}",
      "-o", "{d}/pt"]

CASES = {
    # capture: option values
    "batch-size-0": (CAPTURE + ["--batch-size", "0"], "--batch-size: must be >= 1, got 0"),
    "batch-size-negative": (CAPTURE + ["--batch-size", "-1"], "--batch-size: must be >= 1, got -1"),
    "batch-size-text": (CAPTURE + ["--batch-size", "abc"], "--batch-size:"),
    "dtype": (CAPTURE + ["--dtype", "int8"], "--dtype: 'int8' is not one of"),
    "backend": (CAPTURE + ["--backend", "jax"], "--backend: 'jax' is not one of"),
    "site-kind": (CAPTURE + ["--sites", "resid_middle"], "unknown site 'resid_middle'"),
    "site-layer-range": (CAPTURE + ["--sites", "resid_post.9"], "layer 9 is out of range: the model has 3 layers"),
    "sites-empty": (CAPTURE + ["--sites", ","], "no sites"),
    "layers-empty-range": (CAPTURE + ["--layers", "3-1"], "--layers: layer range '3-1' is empty"),
    "layers-garbage": (CAPTURE + ["--layers", "x"], "--layers: cannot parse layer 'x'"),
    "layers-range": (CAPTURE + ["--layers", "7"], "layer 7 is out of range"),
    "positions-missing-name": (CAPTURE + ["--positions", "nope"], "has no position named 'nope'"),
    "positions-garbage": (CAPTURE + ["--positions", "a b"], "--positions: cannot parse positions"),
    "missing-out": (["capture", "{base}", "{tuned}", "-p", "{prompts}"], "missing option"),
    "unknown-option": (CAPTURE + ["--bogus"], "no such option: --bogus"),
    "extra-argument": (CAPTURE + ["extra"], "unexpected extra argument"),
    # capture: output folders
    "out-is-file": (["capture", "{base}", "{tuned}", "-p", "{prompts}", "-o", "{afile}"], "is a file, not a folder"),
    "out-under-file": (["capture", "{base}", "{tuned}", "-p", "{prompts}", "-o", "{under_file}"], "cannot be created"),
    "out-foreign": (["capture", "{base}", "{tuned}", "-p", "{prompts}", "-o", "{userdir}"], "holds files alignloc did not write (keep.txt)"),
    "out-foreign-manifest": (["capture", "{base}", "{tuned}", "-p", "{prompts}", "-o", "{user_manifest}", "--overwrite"],
                             "not an alignloc activation store manifest"),
    "out-foreign-prompts": (["capture", "{base}", "{tuned}", "-p", "{prompts}", "-o", "{user_prompts}", "--overwrite"],
                            "prompts.jsonl already there and not written by alignloc"),
    "out-corrupt-store": (["capture", "{base}", "{tuned}", "-p", "{prompts}", "-o", "{st_truncated}", "--overwrite"], "not valid JSON"),
    # prompt files
    "prompts-missing": (["capture", "{base}", "{tuned}", "-p", "{d}/none.jsonl", "-o", "{d}/o"], "prompt file not found"),
    "prompts-dir": (["capture", "{base}", "{tuned}", "-p", "{p_dir}", "-o", "{d}/o"], "is a folder, not a prompt file"),
    "prompts-latin1": (["capture", "{base}", "{tuned}", "-p", "{p_latin1}", "-o", "{d}/o"], "latin1.jsonl:2: not UTF-8 text (byte 0xe9"),
    "prompts-deep": (["capture", "{base}", "{tuned}", "-p", "{p_deep}", "-o", "{d}/o"], "deep.jsonl:2: JSON nested too deeply"),
    "prompts-blank-text": (["capture", "{base}", "{tuned}", "-p", "{p_blank}", "-o", "{d}/o"], "blank.jsonl:2: field 'text' is blank"),
    "prompts-empty": (["capture", "{base}", "{tuned}", "-p", "{p_empty}", "-o", "{d}/o"], "no prompts in file"),
    "prompts-nan": (["capture", "{base}", "{tuned}", "-p", "{p_nan}", "-o", "{d}/o"], "nan.jsonl:2: not valid JSON (NaN is not"),
    "prompts-duplicate": (["capture", "{base}", "{tuned}", "-p", "{p_dup}", "-o", "{d}/o"], "dup.jsonl:2: field 'id': duplicate id"),
    "prompts-typo": (["capture", "{base}", "{tuned}", "-p", "{p_typo}", "-o", "{d}/o"], "unknown field 'taget'"),
    "prompts-not-object": (["capture", "{base}", "{tuned}", "-p", "{p_list}", "-o", "{d}/o"], "expected a JSON object, got list"),
    "prompts-surrogate": (["capture", "{base}", "{tuned}", "-p", "{p_surrogate}", "-o", "{d}/o"], "lone surrogate"),
    "prompts-huge-int": (["capture", "{base}", "{tuned}", "-p", "{p_bigint}", "-o", "{d}/o"], "bigint.jsonl:1: not valid JSON"),
    # model references
    "ref-missing": (["capture", "{d}/nothing", "{tuned}", "-p", "{prompts}", "-o", "{d}/o"], "no such directory"),
    "ref-file": (["capture", "{afile}", "{tuned}", "-p", "{prompts}", "-o", "{d}/o"], "is a file (give a Hugging Face"),
    "ref-no-tuned": (["capture", "{base}", "-p", "{prompts}", "-o", "{d}/o"], "a tuned model is needed"),
    "zoo-unknown": (["capture", "zoo:nope", "-o", "{d}/o"], "unknown organism 'nope'"),
    "zoo-bad-side": (["capture", "zoo:chat-sft-upper:middle", "{tuned}", "-p", "{prompts}", "-o", "{d}/o"], "must be 'base' or 'tuned'"),
    "zoo-bad-size": (["layer-diff", "zoo:chat-sft-upper@huge", "-o", "{d}/o"], "unknown zoo size 'huge' (give one of tiny"),
    "zoo-bad-layer": (["capture", "zoo:refusal-lora-L9", "-o", "{d}/o"], "layer 9 out of range"),
    "pickle-only": (["capture", "{base}", "{pickled}", "-p", "{prompts}", "-o", "{d}/o"], "would read pickle weights (pytorch_model.bin)"),
    "pickle-decoy": (["capture", "{base}", "{decoy_model}", "-p", "{prompts}", "-o", "{d}/o"], "x.safetensors would not be read"),
    "pickle-shards": (["capture", "{base}", "{bin_index}", "-p", "{prompts}", "-o", "{d}/o"], "pytorch_model-1.bin"),
    "pickle-explicit": (["capture", "{base}", "{explicit_pickle}", "-p", "{prompts}", "-o", "{d}/o"], "pickle weights (weights.pt; model.safetensors would not be read)"),
    "adapter-decoy": (["capture", "{base}", "{adapter_decoy}", "-p", "{prompts}", "-o", "{d}/o"], "peft adapter loader would read pickle"),
    "truncated-weights": (["capture", "{base}", "{truncated}", "-p", "{prompts}", "-o", "{d}/o"], "model.safetensors: truncated: its header needs"),
    "bad-config": (["capture", "{base}", "{bad_config}", "-p", "{prompts}", "-o", "{d}/o"], "config.json: not valid JSON"),
    # info on damaged stores
    "info-not-store": (["info", "{userdir}"], "not an activation store (no manifest.json)"),
    "info-missing": (["info", "{store_nodir}"], "no such folder"),
    "info-shard-gone": (["info", "{st_shard_gone}", "--verify"], "chunk-00001.safetensors: shard is missing"),
    "info-flipped": (["info", "{st_flipped}", "--verify"], "checksum mismatch"),
    "info-prompts-gone": (["info", "{st_prompts_gone}", "--verify"], "the store's prompt file is missing"),
    "info-prompts-edited": (["info", "{st_prompts_edited}", "--verify"], "the prompts differ from those captured"),
    "info-truncated": (["info", "{st_truncated}"], "manifest.json: not valid JSON"),
    "info-mistyped": (["info", "{st_typed}"], "field 'n_prompts' must be int, got str"),
    "info-traversal": (["info", "{st_traversal}", "--verify"], "chunk 0 lists files ['../../etc/passwd']"),
    "info-format": (["info", "{st_format}"], "not an alignloc activation store manifest"),
    "info-incomplete": (["info", "{st_incomplete}"], "capture is incomplete (1 of 2 chunks)"),
    "info-nonsense": (["info", "{st_nonsense}"], "not an alignloc activation store manifest"),
    "info-bad-site": (["info", "{st_sites}"], "field 'sites' holds 'nonsense'"),
    "info-lengths": (["info", "{st_lengths}"], "field 'lengths' has 1 entries for 2 prompts"),
    # layer-diff
    "ld-n-boot-0": (LAYER_DIFF + ["--n-boot", "0"], "--n-boot: must be >= 1, got 0"),
    "ld-n-boot-negative": (LAYER_DIFF + ["--n-boot", "-5"], "--n-boot: must be >= 1, got -5"),
    "ld-batch-size": (LAYER_DIFF + ["--batch-size", "0"], "--batch-size: must be >= 1"),
    "ld-seed-negative": (LAYER_DIFF + ["--seed", "-1"], "--seed: must be in 0..4294967295, got -1"),
    "ld-user-index": (["layer-diff", "{base}", "{tuned}", "-p", "{prompts}", "-o", "{user_index}"], "index.html already there"),
    "ld-user-report-overwrite": (["layer-diff", "{base}", "{tuned}", "-p", "{prompts}", "-o", "{user_report}", "--overwrite"],
                                 "report.json already there and not written by alignloc"),
    "ld-control-missing": (["layer-diff", "{base}", "{tuned}", "-p", "{prompts}", "--control", "{d}/nope", "-o", "{d}/r"], "no such directory"),
    "ld-store-file": (LAYER_DIFF + ["--store", "{afile}"], "--store"),
    "ld-suite-unknown": (["layer-diff", "{base}", "{tuned}", "--suite", "chat,bogus", "-o", "{d}/r"], "unknown suite 'bogus'"),
    "ld-suite-and-prompts": (LAYER_DIFF + ["--suite", "chat"], "--suite and --prompts: give one of them"),
    "ld-answer-tokens-0": (LAYER_DIFF + ["--answer-tokens", "0"], "--answer-tokens: must be >= 1, got 0"),
    "ld-template-missing": (["layer-diff", "{base}", "{tuned}", "--chat-template", "{d}/t.jinja", "-o", "{d}/r"],
                            "not one of auto, tuned, base, none and no such file"),
    "ld-template-tuned-none": (["layer-diff", "{base}", "{tuned}", "--chat-template", "tuned", "-o", "{d}/r"],
                               "the tuned tokenizer has no chat template"),
    "cap-suites-no-tuned": (["capture", "{base}", "-o", "{d}/o"], "a tuned model is needed"),
    "ld-out-is-file": (["layer-diff", "{base}", "{tuned}", "-p", "{prompts}", "-o", "{afile}"], "is a file, not a folder"),
    # localize-bench
    "lb-n-prompts-0": (["localize-bench", "--n-prompts", "0"], "--n-prompts: must be >= 1, got 0"),
    "lb-n-prompts-negative": (["localize-bench", "--n-prompts", "-3"], "--n-prompts: must be >= 1, got -3"),
    "lb-out-file": (["localize-bench", "--out", "{afile}"], "is a file, not a folder"),
    "lb-out-foreign": (["localize-bench", "--out", "{userdir}"], "holds files alignloc did not write"),
    "lb-out-user-report": (["localize-bench", "--out", "{user_report}", "--overwrite"],
                           "report.json already there and not written by alignloc"),
    "lb-json-takes-no-file": (["localize-bench", "--json", "{d}/x.json"], "unexpected extra argument"),
    "lb-methods": (["localize-bench", "--methods", "weight_diff,bogus"], "--methods: 'weight_diff,bogus' is not a comma list"),
    "lb-size": (["localize-bench", "--size", "huge"], "unknown zoo size 'huge'"),
    "lb-out-under-file": (["localize-bench", "--out", "{under_file}"], "cannot be created"),
    # context-prior
    "cp-gate": (CP + ["--gate", "sometimes"], "--gate: 'sometimes' is not one of always, context, both"),
    "cp-layers": (CP + ["--layers", "9"], "--layers: layer 9 is out of range"),
    "cp-text-latin1": (CP + ["--text", "{latin1_txt}"], "t.txt:2: not UTF-8 text (byte 0xff"),
    "cp-text-missing": (CP + ["--text", "{d}/none.txt"], "text file not found"),
    "cp-text-blank": (CP + ["--text", "{blank_txt}"], "no text in the file"),
    "cp-no-prompts": (["context-prior", "{base}", "-o", "{d}/cp"], "--prompts is required unless MODEL is a zoo model"),
    "cp-conflict-fields": (["context-prior", "{base}", "-p", "{p_conflict}", "-o", "{d}/cp"], "conflict prompt 'c' lacks target"),
    "cp-out-foreign": (CP[:-1] + ["{userdir}"], "holds files alignloc did not write"),
    # proxy-tune
    "pt-beta-without-1": (PT + ["--beta", "0,0.5"], "--beta: '0,0.5' must include 1"),
    "pt-beta-nan": (PT + ["--beta", "nan,1"], "not finite"),
    "pt-beta-inf": (PT + ["--beta", "1,inf"], "not finite"),
    "pt-beta-text": (PT + ["--beta", "one"], "not a comma-separated list of numbers"),
    "pt-beta-repeated": (PT + ["--beta", "1,1.0"], "repeats a value"),
    "pt-no-models": (["proxy-tune", "-p", "{prompts}"], "give --large-base, --small-base and --small-tuned, or --zoo"),
    "pt-large-organism": (["proxy-tune", "--zoo", "--organism", "chat-sft-full-large"], "--organism: name the organism tuned from base"),
    "pt-unknown-organism": (["proxy-tune", "--zoo", "--organism", "nope"], "unknown organism 'nope'"),
    "pt-no-behavior": (PT[:-4] + ["-p", "{p_nobehavior}", "-o", "{d}/pt"], "needs prompts of kind 'knowledge' and 'behavior'"),
    "pt-out-foreign": (PT[:-1] + ["{userdir}"], "holds files alignloc did not write"),
    # figures
    "fig-format": (["figures", "{res_ok}", "--format", "gif"], "--format: 'gif' is not a comma list"),
    "fig-format-empty": (["figures", "{res_ok}", "--format", ","], "--format"),
    "fig-missing": (["figures", "{d}/none.json", "-o", "{d}/f"], "no such result"),
    "fig-not-json": (["figures", "{res_bad}", "-o", "{d}/f"], "r.json: not valid JSON"),
    "fig-deep": (["figures", "{res_deep}", "-o", "{d}/f"], "JSON nested too deeply"),
    "fig-latin1": (["figures", "{res_latin1}", "-o", "{d}/f"], "l.json:1: not UTF-8 text"),
    "fig-missing-keys": (["figures", "{res_keys}", "-o", "{d}/f"], "an incomplete or edited layer-diff result"),
    "fig-list": (["figures", "{res_list}", "-o", "{d}/f"], "not an object"),
    "fig-unknown": (["figures", "{res_unknown}", "-o", "{d}/f"], "not an alignloc result"),
    "fig-out-file": (["figures", "{res_ok}", "-o", "{afile}"], "is a file, not a folder"),
    "fig-out-collision": (["figures", "{res_ok}", "-o", "{user_fig}", "--format", "svg", "--overwrite"],
                          "localize_bench.svg already there and not written by alignloc"),
    # demo, zoo, the app
    "demo-base": (["demo", "--organism", "base", "-o", "{d}/demo"], "--organism: base is a base model"),
    "demo-unknown": (["demo", "--organism", "nope", "-o", "{d}/demo"], "unknown organism 'nope'"),
    "demo-size": (["demo", "--size", "huge", "-o", "{d}/demo"], "unknown zoo size 'huge'"),
    "demo-out-foreign": (["demo", "-o", "{userdir}"], "holds files alignloc did not write"),
    "zoo-build-unknown": (["zoo", "build", "nope"], "unknown organism 'nope'"),
    "zoo-list-size": (["zoo", "list", "--size", "huge"], "unknown zoo size 'huge'"),
    "no-such-command": (["nope"], "no such command 'nope'"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_input_is_one_line_and_touches_nothing(case, llama_pair, store_template, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ALIGNLOC_ZOO", str(tmp_path / "no-zoo"))  # no case may build or read a zoo
    argv, needle = CASES[case]
    inputs = Inputs(tmp_path / "case", llama_pair, store_template)
    inputs.d.mkdir()
    argv = [a.format_map(inputs) for a in argv]
    before = tree(tmp_path)
    capsys.readouterr()
    rc = main(argv)
    assert_one_error(rc, capsys.readouterr().err, needle)
    assert tree(tmp_path) == before  # nothing created, changed or deleted


def test_there_are_enough_cases():
    assert len(CASES) >= 60


@contextmanager
def unprivileged():
    """Run the body as an unprivileged user when the tests run as root (root writes into any folder)."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


@pytest.mark.parametrize("command", ["figures", "capture", "layer-diff"])
def test_read_only_output_folder_is_an_error(command, llama_pair, capsys):
    root = Path(tempfile.mkdtemp(prefix="alignloc-ro-"))  # outside pytest's 0700 folders: readable by nobody
    try:
        os.chmod(root, 0o755)
        (root / "p.jsonl").write_text(jsonl(*GOOD))
        (root / "r.json").write_text(json.dumps(
            {"methods_run": ["m"], "tiers": {"easy": {"methods": {"m": {"hit@1_single_layer": 1.0, "hit@1": 1.0,
                                                                     "control_false_positives": 0.0}}}}}))
        models = [shutil.copytree(d, root / d.name) for d in llama_pair]
        for p in root.rglob("*"):
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        ro = root / "ro"
        ro.mkdir()
        os.chmod(ro, 0o555)
        argv = {"figures": ["figures", str(root / "r.json"), "--format", "svg", "-o", str(ro)],
                "capture": ["capture", *map(str, models), "-p", str(root / "p.jsonl"), "-o", str(ro / "acts")],
                "layer-diff": ["layer-diff", *map(str, models), "-p", str(root / "p.jsonl"), "-o", str(ro)]}[command]
        # the same command as root, stopped at the same check by a path under a file: every module it needs is
        # imported now (an unprivileged user cannot read site-packages under /root)
        assert main([a.replace(str(ro), str(root / "p.jsonl" / "x")) for a in argv]) == 2
        before = tree(root)
        capsys.readouterr()
        with unprivileged():
            rc = main(argv)
        assert_one_error(rc, capsys.readouterr().err, f"{ro} is not writable")
        assert tree(root) == before
    finally:
        shutil.rmtree(root)


def test_sigint_during_capture_exits_130_and_the_store_resumes(llama_pair, tmp_path):
    """A real Ctrl-C in the middle of `alignloc capture`: exit 130, what was kept, and a resumable store.

    Independent of the machine's speed: the child is stopped (SIGSTOP) as soon as 3 chunks are on disk, checked
    to be mid-capture while it cannot move, and only then gets SIGINT (and SIGCONT). With 300 prompts, 2 x 300
    chunk writes remain after the 3rd: far more than a process can do between a poll and the stop.
    """
    from alignloc.prompts import Prompt, save_prompts
    from alignloc.store import open_store

    prompts = [Prompt(id=f"p{i}", text=f"the cat number {i} sat on the mat and the dog ran") for i in range(300)]
    save_prompts(prompts, tmp_path / "p.jsonl")
    out = tmp_path / "acts"
    argv = ["capture", *map(str, llama_pair), "--prompts", str(tmp_path / "p.jsonl"), "--sites", "resid_post,mlp_out",
            "--positions", "all", "--batch-size", "1", "--out", str(out)]
    env = {**os.environ, "ALIGNLOC_ZOO": str(tmp_path / "no-zoo"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(Path(__file__).parents[1])}
    # a shell without job control starts background jobs with SIGINT ignored, and Python then keeps it ignored:
    # give the child the default disposition, as a terminal's Ctrl-C would find it
    proc = subprocess.Popen([sys.executable, "-m", "alignloc.cli", *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 180
    while (m := manifest_or_none(out)) is None or len(m["chunks"]) < 3:
        assert proc.poll() is None, proc.communicate()[1]
        assert time.time() < deadline, "3 chunks were not written within 180 s"
        time.sleep(0.002)
    proc.send_signal(signal.SIGSTOP)
    try:
        wait_stopped(proc.pid)
        m = manifest_or_none(out)  # the child cannot write from here until SIGCONT
        assert proc.poll() is None and not m["complete"] and 3 <= len(m["chunks"]) < len(prompts), "stopped mid-capture"
    finally:
        proc.send_signal(signal.SIGINT)  # pending while stopped: it lands right after SIGCONT, at the stopped point
        proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    kept = json.loads((out / "manifest.json").read_text())["chunks"]
    assert 3 <= len(kept) < len(prompts), "the interrupt should land mid-capture"
    n = len(prompts)  # the sides run one after the other: the interrupt lands in the base side's pass
    assert err.strip().splitlines()[-1] == (f"alignloc: interrupted; kept 0 of {n} chunks (base: {len(kept)} of {n}, "
                                            f"tuned: 0 of {n}) in {out} "
                                            "(rerun the same command to resume: finished work is reused)")
    done = {rel: (out / rel).stat().st_mtime_ns for c in kept for rel in c["files"]}
    assert main(argv) == 0  # the same command resumes
    store = open_store(out)
    assert store.verify_all() == 4 * len(prompts)
    assert {rel: (out / rel).stat().st_mtime_ns for rel in done} == done  # kept chunks were not redone
    assert not list(out.rglob("*.tmp"))


def _adapter_variant(src: Path, dst: Path, safe: bytes | None, pickle_state: dict | None, decoy: bool) -> Path:
    """A copy of a LoRA adapter folder with the weights as safetensors, pickle, both, and/or a stray .safetensors."""
    import torch

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("adapter_model.*"))
    if safe is not None:
        (dst / "adapter_model.safetensors").write_bytes(safe)
    if pickle_state is not None:
        torch.save(pickle_state, dst / "adapter_model.bin")
    if decoy:
        (dst / "x.safetensors").write_bytes((src / "adapter_model.safetensors").read_bytes())
    return dst


def test_pickle_adapter_decoy_refused_and_the_loader_reads_only_safe_files(zoo_tiny, tmp_path):
    """The loader, not the folder, decides: a stray .safetensors does not make adapter_model.bin safe, and
    without --allow-pickle peft is shown only the safetensors (a poisoned .bin next to it is never read)."""
    from safetensors.torch import load_file

    import alignloc
    from alignloc.models.refs import ModelRefError

    org = zoo_tiny / "tiny" / "refusal-lora-L2"
    src, base = org / "adapter", str(org / "base")
    safe = (src / "adapter_model.safetensors").read_bytes()
    state = load_file(src / "adapter_model.safetensors")
    reference = alignloc.load_pair(base, str(src)).tuned.weights_hash
    decoy = _adapter_variant(src, tmp_path / "decoy", None, state, decoy=True)
    with pytest.raises(ModelRefError, match=r"would read pickle weights \(adapter_model.bin; x.safetensors would not be read\)"):
        alignloc.load_pair(base, str(decoy))
    assert alignloc.load_pair(base, str(decoy), allow_pickle=True).tuned.weights_hash == reference
    poisoned = _adapter_variant(src, tmp_path / "both", safe, None, decoy=False)
    (poisoned / "adapter_model.bin").write_bytes(b"\x80\x04 not a pickle: reading it would fail")
    assert alignloc.load_pair(base, str(poisoned)).tuned.weights_hash == reference


def test_interrupted_layer_diff_exits_130_and_names_what_it_kept(llama_pair, tmp_path, capsys, monkeypatch):
    import alignloc.experiments.layerdiff as run

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    (tmp_path / "p.jsonl").write_text(jsonl(*GOOD))
    monkeypatch.setattr(run, "measure", interrupt)  # Ctrl-C right after the capture
    rc = main(["layer-diff", *map(str, llama_pair), "-p", str(tmp_path / "p.jsonl"), "--control", "none", "-o",
               str(tmp_path / "r"), "--no-probes", "--n-boot", "5"])
    assert rc == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"alignloc: interrupted; kept 1 of 1 chunks in {tmp_path / 'r' / 'acts'} (rerun the same command to resume: "
        "finished work is reused)")
    assert not (tmp_path / "r" / "report.json").exists()


def _layer_diff_result(name: str) -> dict:
    """The least a layer-diff report.json holds for its figures."""
    series = {"mean": [0.1, 0.2]}
    return {"pair": {"name": name, "n_layers": 2}, "verdict": {}, "ground_truth": {"layers": [1]},
            "measures": {"weights": {"layers": [{"relative_frobenius": 0.0}, {"relative_frobenius": 0.3}]},
                         "shift": {"relative_l2_increment": series},
                         "lens": {"target_logprob": {"behavior": {"gap": series}}}}}


def test_figures_names_are_slugs_unique_per_input_and_verified(tmp_path, capsys):
    """A pair name with path separators stays inside --out, two inputs with one name both survive, and the
    success line counts only files that are on disk."""
    for i, name in enumerate(["../../escape", "../../escape", "twin"]):
        (tmp_path / f"r{i}.json").write_text(json.dumps(_layer_diff_result(name)))
    out = tmp_path / "figs"
    rc = main(["figures", *(str(tmp_path / f"r{i}.json") for i in range(3)), "--format", "svg", "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    names = sorted(p.name for p in out.iterdir())
    assert names == [".alignloc-outputs", "layerdiff_..-..-escape-2.svg", "layerdiff_..-..-escape.svg", "layerdiff_twin.svg"]
    assert all((out / n).stat().st_size > 1000 for n in names[1:])
    assert capsys.readouterr().out.startswith(f"3 files in {out}")
    assert not (tmp_path.parent / "escape.svg").exists() and not list(tmp_path.glob("*.svg"))
    assert main(["figures", str(tmp_path / "r2.json"), "--format", "svg", "-o", str(out)]) == 0  # its own file: replaced


def test_reports_and_stores_are_readable_by_others(store_template, tmp_path):
    from alignloc.report import write_report
    from alignloc.store.manifest import file_mode

    umask = os.umask(0o022)
    os.umask(umask)
    assert file_mode() == 0o666 & ~umask
    paths = write_report({"x": 1}, tmp_path / "r", render_markdown=lambda r: "# x\n", render_html=lambda r: "<p>x</p>")
    for p in [*paths.values(), *store_template.rglob("*.safetensors"), store_template / "manifest.json"]:
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask, p


def test_a_full_disk_while_writing_is_one_line(llama_pair, tmp_path, capsys, monkeypatch):
    import errno

    import alignloc.store.writer as writer

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    (tmp_path / "p.jsonl").write_text(jsonl(*GOOD))
    monkeypatch.setattr(writer, "atomic_write_bytes", full)
    rc = main(["capture", *map(str, llama_pair), "-p", str(tmp_path / "p.jsonl"), "-o", str(tmp_path / "acts")])
    assert_one_error(rc, capsys.readouterr().err, f"{tmp_path / 'acts' / 'prompts.jsonl'}: No space left on device "
                                                  "(free some space)")
