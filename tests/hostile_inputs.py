"""Inputs for the hostile-input tests: damaged prompt files, model folders, stores and results, built on demand."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

DEEP = "[" * 5000 + "]" * 5000
GOOD = [
    {"id": "a", "text": "Alice lives in Paris", "kind": "knowledge", "target": " Paris", "positions": {"subj": "Alice"}},
    {"id": "b", "text": "The cat sat on the mat .", "kind": "behavior", "target": " Sure", "positions": {"subj": "cat"}},
]


def jsonl(*recs) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in recs)


class Inputs(dict):
    """``{name}`` placeholders of a case, each built on first use inside the case folder ``d``."""

    def __init__(self, d: Path, llama: tuple[Path, Path], store: Path):
        super().__init__(base=str(llama[0]), tuned=str(llama[1]), d=str(d))
        self.d, self.llama, self.store = d, llama, store

    def __missing__(self, key: str) -> str:
        value = str(getattr(self, f"_{key}")())
        self[key] = value
        return value

    def write(self, name: str, data: str | bytes) -> Path:
        p = self.d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
        return p

    def model_copy(self, name: str, drop: tuple[str, ...] = ()) -> Path:
        dst = self.d / name
        shutil.copytree(self.llama[0], dst, ignore=shutil.ignore_patterns(*drop))
        return dst

    def store_copy(self, name: str = "st") -> Path:
        dst = self.d / name
        shutil.copytree(self.store, dst)
        return dst

    def edit_manifest(self, fn) -> Path:
        st = self.store_copy()
        m = json.loads((st / "manifest.json").read_text())
        fn(m)
        (st / "manifest.json").write_text(json.dumps(m))
        return st

    # prompt files
    def _prompts(self): return self.write("p.jsonl", jsonl(*GOOD))
    def _p_latin1(self): return self.write("latin1.jsonl", jsonl(GOOD[0]).encode() + '{"id": "c", "text": "caf\xe9"}\n'.encode("latin-1"))
    def _p_deep(self): return self.write("deep.jsonl", jsonl(GOOD[0]) + '{"id": "c", "text": "x", "meta": {"a": ' + DEEP + "}}\n")
    def _p_blank(self): return self.write("blank.jsonl", jsonl(GOOD[0], {"id": "c", "text": "   \t "}))
    def _p_empty(self): return self.write("empty.jsonl", "\n# only a comment\n")
    def _p_nan(self): return self.write("nan.jsonl", jsonl(GOOD[0]) + '{"id": "c", "text": "x", "meta": {"v": NaN}}\n')
    def _p_dup(self): return self.write("dup.jsonl", jsonl(GOOD[0], GOOD[0]))
    def _p_typo(self): return self.write("typo.jsonl", jsonl({"id": "c", "text": "x", "taget": " y"}))
    def _p_list(self): return self.write("list.jsonl", jsonl([1, 2]))
    def _p_surrogate(self): return self.write("sur.jsonl", '{"id": "c", "text": "x \\ud800 y"}\n')
    def _p_bigint(self): return self.write("bigint.jsonl", '{"id": "c", "text": "x", "label": ' + "9" * 5000 + "}\n")
    def _p_nobehavior(self): return self.write("know.jsonl", jsonl(GOOD[0]))
    def _p_conflict(self): return self.write("conflict.jsonl", jsonl({"id": "c", "text": "x", "kind": "context",
                                                                    "meta": {"condition": "conflict"}}))
    def _p_dir(self): return (self.d / "pdir").mkdir() or self.d / "pdir"
    # other input files
    def _latin1_txt(self): return self.write("t.txt", b"ok\n\xff\xfe bad\n")
    def _blank_txt(self): return self.write("blank.txt", "  \n\t\n")
    def _afile(self): return self.write("afile", "mine")
    def _res_bad(self): return self.write("r.json", '{"measures": ')
    def _res_deep(self): return self.write("deep.json", DEEP)
    def _res_latin1(self): return self.write("l.json", b'{"x": "\xe9"}')
    def _res_keys(self): return self.write("k.json", json.dumps({"measures": {}, "verdict": {}, "pair": {"n_layers": 2}}))
    def _res_list(self): return self.write("list.json", "[1, 2]")
    def _res_unknown(self): return self.write("u.json", '{"hello": 1}')
    def _res_ok(self): return self.write("ok.json", json.dumps(
        {"methods_run": ["m"], "tiers": {"easy": {"methods": {"m": {"hit@1_single_layer": 1.0, "hit@1": 1.0,
                                                                     "control_false_positives": 0.0}}}}}))
    # output folders holding the user's own files
    def _userdir(self): return self.write("mine/keep.txt", "precious").parent
    def _user_index(self): return self.write("rep/index.html", "<p>my page</p>").parent
    def _user_report(self): return self.write("rep2/report.json", '{"mine": true}').parent
    def _user_manifest(self): return self.write("fake/manifest.json", '{"mine": true}').parent
    def _user_prompts(self): return self.write("fake2/prompts.jsonl", "mine").parent
    def _user_fig(self): return self.write("figs/localize_bench.svg", "<svg/>").parent
    def _under_file(self): return Path(self["afile"]) / "sub"
    # model folders
    def _pickled(self): return self._pickle_copy("pickled", keep_safe=False)
    def _decoy_model(self):
        d = self._pickle_copy("decoy", keep_safe=False)
        (d / "x.safetensors").write_bytes((self.llama[0] / "model.safetensors").read_bytes())
        return d

    def _pickle_copy(self, name: str, keep_safe: bool) -> Path:
        d = self.model_copy(name, () if keep_safe else ("model.safetensors",))
        (d / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
        return d

    def _bin_index(self):
        d = self.model_copy("binidx", ("model.safetensors",))
        (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "pytorch_model-1.bin"}}))
        (d / "pytorch_model-1.bin").write_bytes(b"\x80\x04")
        return d

    def _explicit_pickle(self):
        d = self.model_copy("explicit")
        cfg = json.loads((d / "config.json").read_text())
        (d / "config.json").write_text(json.dumps({**cfg, "transformers_weights": "weights.pt"}))
        (d / "weights.pt").write_bytes(b"\x80\x04")
        return d

    def _truncated(self):
        d = self.model_copy("trunc")
        data = (d / "model.safetensors").read_bytes()
        (d / "model.safetensors").write_bytes(data[: len(data) // 2])
        return d

    def _bad_config(self):
        d = self.model_copy("badcfg")
        (d / "config.json").write_text('{"model_type": "llama", ')
        return d

    def _adapter_decoy(self):
        d = self.d / "adapter"
        d.mkdir()
        (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2}))
        (d / "x.safetensors").write_bytes((self.llama[0] / "model.safetensors").read_bytes())
        (d / "adapter_model.bin").write_bytes(b"\x80\x04payload")
        return d

    # damaged stores
    def _store_nodir(self): return self.d / "no-store"
    def _st_shard_gone(self):
        st = self.store_copy()
        (st / "tuned" / "mlp_out" / "chunk-00001.safetensors").unlink()
        return st

    def _st_flipped(self):
        st = self.store_copy()
        shard = st / "base" / "resid_post" / "chunk-00000.safetensors"
        data = bytearray(shard.read_bytes())
        data[-3] ^= 1
        shard.write_bytes(bytes(data))
        return st

    def _st_prompts_gone(self):
        st = self.store_copy()
        (st / "prompts.jsonl").unlink()
        return st

    def _st_prompts_edited(self):
        st = self.store_copy()
        (st / "prompts.jsonl").write_text(jsonl({**GOOD[0], "text": "Alice lives in Rome"}, GOOD[1]))
        return st

    def _st_truncated(self):
        st = self.store_copy()
        (st / "manifest.json").write_text((st / "manifest.json").read_text()[:100])
        return st

    def _st_typed(self): return self.edit_manifest(lambda m: m.update(n_prompts="2"))
    def _st_traversal(self): return self.edit_manifest(lambda m: m["chunks"][0]["files"].update({"../../etc/passwd": "0" * 64}))
    def _st_format(self): return self.edit_manifest(lambda m: m.update(format="something-else"))
    def _st_incomplete(self): return self.edit_manifest(lambda m: m.update(complete=False, chunks=m["chunks"][:1]))
    def _st_nonsense(self): return self.write("st/manifest.json", "[]").parent
    def _st_sites(self): return self.edit_manifest(lambda m: m.update(sites=["resid_post.0", "nonsense"]))
    def _st_lengths(self): return self.edit_manifest(lambda m: m.update(lengths=[1]))


def tree(d: Path) -> dict[str, str]:
    """Every path under ``d`` -> sha256 of its bytes ('dir' for folders, the target for links)."""
    out = {}
    for p in sorted(d.rglob("*")):
        rel = str(p.relative_to(d))
        out[rel] = f"-> {os.readlink(p)}" if p.is_symlink() else "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def assert_one_error(rc: int, err: str, needle: str) -> str:
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("alignloc: error: ") and "Traceback" not in err, err
    assert needle in lines[0], lines[0]
    return lines[0]


def manifest_or_none(store: Path) -> dict | None:
    """A store's manifest as written so far (None before it is first written)."""
    try:
        return json.loads((store / "manifest.json").read_text())
    except (OSError, ValueError):  # not written yet
        return None


def wait_stopped(pid: int, timeout: float = 30.0) -> None:
    """Until the kernel reports process ``pid`` stopped (state T in /proc; where there is no /proc, at once)."""
    stat = Path(f"/proc/{pid}/stat")
    deadline = time.time() + timeout
    while stat.exists() and stat.read_text().rpartition(")")[2].split()[0] not in ("T", "t"):
        assert time.time() < deadline, f"process {pid} did not stop"
        time.sleep(0.001)
