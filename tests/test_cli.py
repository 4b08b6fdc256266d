"""The CLI in-process through main(argv): capture, info, and one-line errors with exit code 2."""

from __future__ import annotations

import json

import pytest

from alignloc.cli import main
from alignloc.store import open_store


@pytest.fixture
def prompt_file(tmp_path):
    p = tmp_path / "prompts.jsonl"
    recs = [
        {"id": "a", "text": "Alice lives in Paris", "kind": "knowledge", "positions": {"subj": "Alice"}},
        {"id": "b", "text": "The cat sat on the mat .", "kind": "other", "positions": {"subj": "cat"}},
        {"id": "c", "text": "Bob", "kind": "other", "positions": {"subj": "Bob"}},
    ]
    p.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    return p


@pytest.mark.parametrize("backend", ["hf", "bridge", "nnsight"])
def test_capture_and_info(arch_pairs, prompt_file, tmp_path, capsys, backend):
    base, tuned = arch_pairs["gpt2"]
    out = tmp_path / f"acts-{backend}"
    rc = main(["capture", str(base), str(tuned), "--prompts", str(prompt_file), "--sites",
               "resid_post,attn_out,mlp_out", "--positions", "subj", "--out", str(out), "--backend", backend])
    assert rc == 0
    st = open_store(out)
    assert st.get("tuned", "resid_post", layer=2).shape == (3, 64)
    assert st.manifest["backend"] == backend
    capsys.readouterr()
    assert main(["info", str(out), "--verify"]) == 0
    text = capsys.readouterr().out
    assert "attn_out, mlp_out, resid_post at layers 0..2" in text and "verified: 6 shards" in text


def test_backends_write_equal_stores(arch_pairs, prompt_file, tmp_path):
    base, tuned = arch_pairs["qwen2"]
    stores = {}
    for backend in ("hf", "bridge", "nnsight"):
        out = tmp_path / backend
        assert main(["capture", str(base), str(tuned), "-p", str(prompt_file), "--sites", "resid_post,mlp_out",
                     "--positions", "all", "-o", str(out), "--backend", backend]) == 0
        stores[backend] = open_store(out)
    for side in ("base", "tuned"):
        for site in stores["hf"].sites:
            ref = stores["hf"].get(side, site)
            for other in ("bridge", "nnsight"):
                assert (stores[other].get(side, site) - ref).abs().max() <= 1e-4


@pytest.mark.parametrize(
    "args, message",
    [
        (["--sites", "resid_middle"], "unknown site"),
        (["--positions", "nope"], "no position named 'nope'"),
        (["--dtype", "int8"], "--dtype: 'int8'"),
        (["--backend", "jax"], "--backend: 'jax' is not one of"),
    ],
)
def test_user_errors_are_one_line(arch_pairs, prompt_file, tmp_path, capsys, args, message):
    base, tuned = arch_pairs["llama"]
    rc = main(["capture", str(base), str(tuned), "-p", str(prompt_file), "-o", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("alignloc: error:") and message in err and "Traceback" not in err


def test_mismatched_pair_and_malformed_prompts(arch_pairs, prompt_file, tmp_path, capsys):
    rc = main(["capture", str(arch_pairs["llama"][0]), str(arch_pairs["gemma2"][1]), "-p", str(prompt_file),
               "-o", str(tmp_path / "o")])
    assert rc == 2 and "differ in architecture" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "x"}\n{"id": "b", "text": "y", "kind": 5}\n')
    rc = main(["capture", *map(str, arch_pairs["llama"]), "-p", str(bad), "-o", str(tmp_path / "o")])
    assert rc == 2 and "bad.jsonl:2: field 'kind' must be str" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_prompt_longer_than_context(arch_pairs, tmp_path, capsys):
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps({"id": "big", "text": "the cat " * 80}) + "\n")
    rc = main(["capture", *map(str, arch_pairs["llama"]), "-p", str(long), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "prompt 'big' has" in err and "context of 64" in err


def test_help_and_usage_errors(capsys):
    assert main(["--help"]) == 0
    assert "capture" in capsys.readouterr().out
    assert main(["capture"]) == 2


def _leaves(group, prefix: str = "") -> dict[str, object]:
    """Every command of the CLI's click tree, by its path (``capture``, ``zoo build``)."""
    out = {}
    for name, c in group.commands.items():
        out |= _leaves(c, f"{prefix}{name} ") if hasattr(c, "commands") else {f"{prefix}{name}": c}
    return out


def _commands() -> dict[str, object]:
    import typer

    from alignloc.cli import app

    return _leaves(typer.main.get_command(app))


def _options(cmd) -> dict[str, object]:
    return {o: p for p in cmd.params for o in (*p.opts, *getattr(p, "secondary_opts", ())) if o.startswith("--")}


def test_every_help_is_fast_and_imports_neither_torch_nor_transformers():
    """``alignloc --help`` and every ``alignloc COMMAND --help`` are answered from the command definitions alone
    (the heavy imports happen in the commands' bodies): under 1 s each, counting the import of the CLI, and
    neither torch nor transformers in ``sys.modules`` afterwards. Run in a fresh interpreter."""
    import subprocess
    import sys

    from alignloc.cli.zoo import SIZE_NAMES
    from alignloc.zoo import REAL_SIZE, SIZES, TRAINED_SIZES
    from alignloc.zoo.config import SIZES as CONFIG_SIZES
    from alignloc.zoo.real import SIZE

    assert SIZE_NAMES == TRAINED_SIZES == tuple(CONFIG_SIZES) and REAL_SIZE == SIZE and SIZES == (*TRAINED_SIZES, SIZE)
    paths = sorted(_commands())
    code = ("import sys, time\nt0 = time.perf_counter()\nfrom alignloc.cli import main\n"
            "start = time.perf_counter() - t0\nimport io, contextlib\n"
            f"for path in [''] + {paths!r}:\n"
            "    t = time.perf_counter()\n"
            "    with contextlib.redirect_stdout(io.StringIO()):\n"
            "        rc = main([*path.split(), '--help'])\n"
            "    print('help', repr(path), rc, round(start + time.perf_counter() - t, 3))\n"
            "print('heavy:', sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.strip().splitlines()
    assert lines[-1] == "heavy: []", r.stdout[-500:]
    helps = [ln.split() for ln in lines if ln.startswith("help ")]
    assert len(helps) == len(paths) + 1 and all(h[-2] == "0" for h in helps), r.stdout
    slow = [h for h in helps if float(h[-1]) >= 1.0]
    assert not slow, f"--help took 1 s or more (import of the CLI included): {slow}"


# Commands that write no files (info, suites, zoo list print; zoo build writes into the zoo's own cache,
# $ALIGNLOC_ZOO, not into a folder of the user's choice).
NO_OUT = {"info", "suites", "zoo list", "zoo build"}
# Commands that load or train no model: zoo build trains, but the zoo's training code pins it to CPU and is
# hashed into every organism's fingerprint, so it takes no --device (see its --help).
NO_DEVICE = {"info", "suites", "zoo list", "zoo build"}
# Options that several commands take with a different default or help, and why.
MAY_DIFFER = {
    "--out": "each command's own default folder and the files it writes",
    "--overwrite": "what each command replaces (a store, a report folder, an organism)",
    "--size": "the sizes each command can use",
    "--prompts": "what each command falls back to without it",
    "--json": "what each command prints",
    "--probes": "trajectory runs 2 reports per stage: probes are opt-in there",
    "--organism": "demo's default organism, proxy-tune's behavior organism",
    "--layers": "capture's layers to store, context-prior's layers to intervene at",
}


def test_one_grammar_for_every_command():
    """--out on every command that writes files and --overwrite wherever something is replaced (no --force);
    --device, --compute-dtype and --device-map on every command that loads a model; --json a flag (print the
    result as JSON on stdout) wherever it appears; an option that several commands take has one default and one
    help text (defined once in cli.options), except the MAY_DIFFER ones."""
    commands = _commands()
    for path, cmd in commands.items():
        opts = _options(cmd)
        assert "--force" not in opts, path
        assert ("--out" in opts) == (path not in NO_OUT), path
        assert ("--overwrite" in opts) == (path not in NO_OUT - {"zoo build"}), path
        for o in ("--device", "--compute-dtype", "--device-map"):
            assert (o in opts) == (path not in NO_DEVICE), f"{path}: {o}"
        if "--json" in opts:
            assert opts["--json"].is_flag, f"{path}: --json names no file (files go to --out)"
        if "--out" in opts:
            assert "-o" in opts["--out"].opts, path
    seen: dict[str, tuple] = {}
    for path, cmd in commands.items():
        for name, p in _options(cmd).items():
            if name in MAY_DIFFER or name.startswith("--no-"):
                continue
            key = (p.default, p.help, p.is_flag if hasattr(p, "is_flag") else None)
            first = seen.setdefault(name, (path, key))
            assert first[1] == key, f"{name}: {first[0]} and {path} differ ({first[1]} vs {key})"
    assert seen["--n-boot"][1][0] == 1000 and seen["--seed"][1][0] == 0


def test_the_guide_s_command_grammar_matches_the_commands():
    """Every command and option in docs/guide.md's command-line block exists (the docs are checked against the
    commands themselves), and every command of the CLI is listed there."""
    import re
    from pathlib import Path

    import typer

    from alignloc.cli import app

    guide = (Path(__file__).resolve().parents[1] / "docs" / "guide.md").read_text()
    block = re.search(r"## Command line\n\n```text\n(.*?)```", guide, flags=re.S).group(1)
    root = typer.main.get_command(app)
    listed = set()
    for line in block.splitlines():
        words = line.split()
        assert words[0] == "alignloc", line
        cmd, path = root, []
        for w in words[1:]:
            if hasattr(cmd, "commands") and w in cmd.commands:
                cmd = cmd.commands[w]
                path.append(w)
            else:
                break
        assert path and not hasattr(cmd, "commands"), f"no such command: {line}"
        listed.add(" ".join(path))
        opts = {o for p in cmd.params for o in (*p.opts, *getattr(p, "secondary_opts", ()))}
        for opt in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", line):
            assert opt in opts, f"{' '.join(path)}: {opt} is not one of its options"

    assert set(_leaves(root)) == listed, set(_leaves(root)) ^ listed


def test_the_readme_s_command_table_matches_the_commands():
    """The README's command table names only real commands and options, and every command of the CLI."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = readme.split("## Commands", 1)[1].split("\n## ", 1)[0]
    commands, listed = _commands(), set()
    for row in re.finditer(r"^\| `alignloc ([^`]*)`(?: / `([^`]*)`)? \|", table, flags=re.M):
        for text in filter(None, row.groups()):  # `zoo build [NAMES...]` / `zoo list`
            words = text.split()
            path = next((p for p in commands if words[:len(p.split())] == p.split()), None)
            assert path is not None, f"no such command: {text}"
            listed.add(path)
            for opt in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text):
                assert opt in _options(commands[path]), f"{path}: {opt} is not one of its options"
    assert listed == set(commands), set(commands) ^ listed


class _FakeZoo:
    """A zoo with one organism whose sides are the tiny llama pair: what ``zoo:NAME@SIZE`` asks of it."""

    def __init__(self, base, tuned):
        self.base, self.tuned, self.calls = base, tuned, []

    def resolve(self, name, size="tiny", build_missing=True):
        from types import SimpleNamespace

        self.calls.append(("resolve", name, size))
        return SimpleNamespace(base=self.base, tuned=self.tuned, drift=None, ground_truth={"layers": [1]})

    def check_name(self, name, size="tiny"):
        self.calls.append(("check_name", name, size))

    def prompts(self, name, size="tiny"):
        self.calls.append(("prompts", name, size))
        return []


@pytest.fixture
def fake_zoo(llama_pair):
    from alignloc.models import refs

    old = refs.zoo_resolver()
    fake = _FakeZoo(*llama_pair)
    refs.register_zoo_resolver(refs.ZooResolver(resolve=fake.resolve, check_name=fake.check_name, prompts=fake.prompts,
                                                recipe_tokenizer=lambda n, s: None, sizes=old.sizes))
    try:
        yield fake
    finally:
        refs.register_zoo_resolver(old)


def test_zoo_references_reach_every_size():
    """``zoo:NAME[@SIZE][:base|tuned]``: tiny by default, the size before the side, written back as read."""
    import alignloc.zoo  # noqa: F401 (registers the zoo and its sizes)
    from alignloc.models.refs import ModelRefError, ZooRef, split_zoo, zoo_ref

    assert split_zoo("zoo:chat-sft-upper") == ZooRef("chat-sft-upper", None, "tiny")
    assert split_zoo("zoo:chat-sft-upper:base") == ("chat-sft-upper", "base", "tiny")
    assert split_zoo("zoo:chat-sft-upper@small:tuned") == ("chat-sft-upper", "tuned", "small")
    assert split_zoo("zoo:smollm2-fact-edit@real").size == "real"
    assert split_zoo("./zoo:x") is None
    for ref in ("zoo:a", "zoo:a:base", "zoo:a@small", "zoo:a@real:tuned"):
        assert zoo_ref(*split_zoo(ref)) == ref
    assert zoo_ref("a", "base", "tiny") == "zoo:a:base"  # @tiny is the default: left out
    with pytest.raises(ModelRefError, match=r"zoo:a@huge: unknown zoo size 'huge' \(give one of tiny, small, tiny-s1, tiny-s2, real"):
        split_zoo("zoo:a@huge")
    with pytest.raises(ModelRefError, match="unknown zoo size ''"):
        split_zoo("zoo:a@")
    with pytest.raises(ModelRefError, match="the size comes before the side"):
        split_zoo("zoo:a:base@small")


def test_a_zoo_size_reaches_the_zoo(fake_zoo, tmp_path):
    """``zoo:NAME@small`` asks the zoo for the small organism wherever a reference is resolved: the pair, each
    side, the layer count check and the bundled prompts; the pair remembers its size (its control's size)."""
    from alignloc import options as check
    from alignloc.models.pair import load_model, load_pair

    pair = load_pair("zoo:org@small", device="cpu")
    assert (pair.name, pair.zoo_size) == ("org", "small")
    assert (pair.base.ref, pair.tuned.ref) == ("zoo:org@small:base", "zoo:org@small:tuned")
    assert load_model("zoo:org@small:base", device="cpu").ref == "zoo:org@small:base"
    check.model_ref("zoo:org@small")
    check.prompts_for("zoo:org@small", None)
    assert {c[2] for c in fake_zoo.calls} == {"small"} and len(fake_zoo.calls) >= 6, fake_zoo.calls
    fake_zoo.calls.clear()
    assert load_pair("zoo:org", device="cpu").zoo_size == "tiny"
    assert {c[2] for c in fake_zoo.calls} == {"tiny"}


def test_an_unknown_zoo_size_is_one_line(tmp_path, capsys):
    rc = main(["capture", "zoo:chat-sft-upper@huge", "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert err.startswith("alignloc: error: zoo:chat-sft-upper@huge: unknown zoo size 'huge' (give one of tiny, small, "
                          "tiny-s1, tiny-s2, real"), err
    assert not (tmp_path / "o").exists()
