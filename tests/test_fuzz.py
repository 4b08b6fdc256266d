"""Fuzzing the two readers of user files: the prompt parser and the store reader (seeded, a few hundred cases each).

Random bytes and mutations of valid files (byte flips, cuts, insertions, values of the wrong type,
deleted keys, deep nesting, huge numbers, lone surrogates) must either parse, or raise one of the
named user errors: never a KeyError, RecursionError, UnicodeError or any other traceback.
"""

from __future__ import annotations

import copy
import json
import random
import shutil
from pathlib import Path

import pytest

import alignloc
from alignloc.errors import UserError
from alignloc.prompts import PromptFormatError, load_prompts, prompts_hash, save_prompts
from alignloc.store import Store

RECORDS = [
    {"id": "a", "text": "Alice lives in Paris", "kind": "knowledge", "target": " Paris", "label": "paris",
     "positions": {"subj": "Alice", "first": 1}},
    {"id": "b", "text": "The cat sat on the mat .", "kind": "behavior", "target": " Sure", "foil": " No",
     "corrupt_text": "The dog sat on the mat .", "meta": {"prior": "strong", "n": [1, 2, {"x": None}]}},
    {"id": "c", "text": "Bob", "kind": "context", "context": "Bob", "label": 3},
]
ODD_VALUES = [None, True, False, 0, -1, 10**30, 1e308, -0.5, "", " ", "\t\n", "x" * 3000, "\u2028", "é", [], {}, [[[]]],
              {"k": {"k": {"k": []}}}, ["a", 1, None], "{", "\\", "\x00"]
RAW_SNIPPETS = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"NaN", b"Infinity", b"-", b"\\ud800", b'"\\ud800"',
                b"[" * 3000, b"]", b"}", b"{", b'"', b",", b"1" * 5000, b"\r\n", b"\xef\xbb\xbf", b"#", b"\n\n"]


def random_value(rng: random.Random, depth: int = 0):
    """A random JSON-ready value, odd ones included."""
    if depth > 2 or rng.random() < 0.6:
        return rng.choice(ODD_VALUES)
    if rng.random() < 0.5:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(["id", "text", "x", "0", ""]): random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def paths(obj, prefix=()):
    """Every (container, key) path inside a JSON value."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else []
    for k, v in items:
        yield (*prefix, k)
        yield from paths(v, (*prefix, k))


def mutate_json(obj, rng: random.Random):
    """One structural mutation: replace a value, delete a key or item, nudge a number, or nest deeply."""
    obj = copy.deepcopy(obj)
    where = list(paths(obj))
    if not where:
        return random_value(rng)
    path = rng.choice(where)
    parent = obj
    for k in path[:-1]:
        parent = parent[k]
    key, op = path[-1], rng.random()
    value = parent[key]
    if op < 0.35:
        parent[key] = random_value(rng)
    elif op < 0.55:
        del parent[key]
    elif op < 0.8 and isinstance(value, int | float) and not isinstance(value, bool):
        parent[key] = rng.choice([value + 1, value - 1, -value, value * 1000, 0, -1, 10**12])
    elif op < 0.9 and isinstance(value, list) and value:
        value.insert(rng.randrange(len(value)), copy.deepcopy(rng.choice(value)))
    else:
        inner = value
        for _ in range(rng.choice([3, 80, 200])):
            inner = [inner]
        parent[key] = inner
    return obj


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """One byte-level mutation: flip, cut, insert a snippet, truncate or duplicate a line."""
    if not data:
        return rng.choice(RAW_SNIPPETS)
    i = rng.randrange(len(data))
    op = rng.random()
    if op < 0.25:
        return data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1:]
    if op < 0.45:
        return data[:i] + data[i + rng.randint(1, 40):]
    if op < 0.75:
        return data[:i] + rng.choice(RAW_SNIPPETS) + data[i:]
    if op < 0.9:
        return data[:i]
    lines = data.split(b"\n")
    j = rng.randrange(len(lines))
    return b"\n".join(lines[:j] + [lines[j]] + lines[j:])


def prompt_file_cases(n: int, seed: int = 0):
    rng = random.Random(seed)
    valid = "".join(json.dumps(r, ensure_ascii=rng.random() < 0.5) + "\n" for r in RECORDS).encode()
    for i in range(n):
        kind = i % 4
        if kind == 0:
            yield bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))
        elif kind == 1:
            data = valid
            for _ in range(rng.randint(1, 3)):
                data = mutate_bytes(data, rng)
            yield data
        elif kind == 2:
            recs = [mutate_json(r, rng) if rng.random() < 0.7 else r for r in RECORDS]
            yield "".join(json.dumps(r) + "\n" for r in recs).encode()
        else:  # valid variants: key order, escapes, blank and comment lines, CRLF, a BOM, padding
            lines = [json.dumps(dict(rng.sample(list(r.items()), len(r))), ensure_ascii=rng.random() < 0.5) for r in RECORDS]
            lines = [rng.choice(["", " ", "\t"]) + ln + rng.choice(["", "  ", "\r"]) for ln in lines]
            lines.insert(rng.randint(0, len(lines)), rng.choice(["", "# a comment", "   "]))
            yield (rng.choice(["", "\ufeff"]) + "\n".join(lines) + rng.choice(["", "\n", "\n\n"])).encode()


@pytest.mark.parametrize("block", range(4))
def test_prompt_parser_fuzz(tmp_path, block):
    """400 seeded files: each either loads (and survives a save/load round trip) or raises PromptFormatError."""
    path, parsed, errors = tmp_path / "p.jsonl", 0, 0
    for data in prompt_file_cases(100, seed=block):
        path.write_bytes(data)
        try:
            prompts = load_prompts(path)
        except PromptFormatError as e:
            errors += 1
            assert "\n" not in str(e).strip() and str(e).startswith(str(path))
            continue
        parsed += 1
        prompts_hash(prompts)
        save_prompts(prompts, tmp_path / "again.jsonl")
        assert load_prompts(tmp_path / "again.jsonl") == prompts
    assert parsed >= 25 and errors >= 40  # the generator reaches both outcomes


@pytest.fixture(scope="module")
def template(llama_pair, tmp_path_factory):
    """Two small stores (last-token and all-position) from the tiny Llama pair, with the bytes of every file."""
    root = tmp_path_factory.mktemp("fuzz-store")
    src = root / "p.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    pair = alignloc.load_pair(*map(str, llama_pair))
    out = {}
    for positions in ("last", "all"):
        st = alignloc.capture(pair, load_prompts(src), out=root / positions, sites="resid_post.0,mlp_out.2",
                              positions=positions, batch_size=2)
        out[positions] = (st.root, {p.relative_to(st.root): p.read_bytes() for p in st.root.rglob("*") if p.is_file()})
    return out


def read_everything(root: Path, verify: bool) -> None:
    st = Store(root, verify=verify)
    st.summary()
    st.mask()
    for side in st.sides:
        for site in st.sites:
            st.get(side, site)
    if verify:
        st.verify_all()
    else:
        _ = st.prompts


def store_cases(files: dict[Path, bytes], n: int, seed: int):
    rng = random.Random(seed)
    manifest = json.loads(files[Path("manifest.json")])
    shards = sorted(p for p in files if p.suffix == ".safetensors")
    for i in range(n):
        changed = dict(files)
        kind = i % 6
        if kind == 0:
            changed[Path("manifest.json")] = bytes(rng.randrange(256) for _ in range(rng.randint(0, 300)))
        elif kind == 1:
            changed[Path("manifest.json")] = mutate_bytes(files[Path("manifest.json")], rng)
        elif kind in (2, 3, 4):
            m = manifest
            for _ in range(rng.randint(1, 2)):
                m = mutate_json(m, rng)
            changed[Path("manifest.json")] = json.dumps(m).encode()
        else:
            target = rng.choice([*shards, Path("prompts.jsonl")])
            changed[target] = mutate_bytes(files[target], rng)
        yield changed, rng.random() < 0.5


@pytest.mark.parametrize("positions", ["last", "all"])
def test_store_reader_fuzz(template, tmp_path, positions):
    """300 seeded damaged stores per layout: reading them raises only user errors (StoreError, PromptFormatError)."""
    src, files = template[positions]
    read_everything(src, verify=True)  # the template itself is fine
    root, outcomes = tmp_path / "s", {"ok": 0, "error": 0}
    for changed, verify in store_cases(files, 300, seed=len(positions)):
        shutil.rmtree(root, ignore_errors=True)
        for rel, data in changed.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
        try:
            read_everything(root, verify)
            outcomes["ok"] += 1
        except UserError as e:
            assert "\n" not in str(e).strip(), e
            outcomes["error"] += 1
    assert outcomes["ok"] >= 5 and outcomes["error"] >= 150, outcomes
