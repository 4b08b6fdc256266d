"""Stream activations to disk chunk by chunk: atomic shard writes, resumable, checksummed.

A chunk is one batch of prompts. Each chunk writes one safetensors file per (side, site kind),
holding one tensor per layer, then records the files' sha256 in the manifest (atomically). A
killed capture leaves a manifest that lists only complete chunks, so rerunning the same
command resumes at the first missing chunk.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from safetensors.torch import save

from alignloc import __version__
from alignloc.prompts import Prompt, dumps_prompts
from alignloc.sites import Site
from alignloc.store.manifest import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    StoreError,
    atomic_write_bytes,
    atomic_write_json,
    plan_diff,
    read_manifest,
    sha256_bytes,
)
from alignloc.store.outputs import check_out_dir, check_writable_dir
from alignloc.store.schema import SIDES

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
PROMPTS = "prompts.jsonl"
STORE_NAMES = (MANIFEST, PROMPTS, *SIDES)  # what a store writes at its top level


def check_store_dir(root: str | Path, overwrite: bool = False, option: str = "store") -> None:
    """Before any work: an error unless ``root`` can take a store (new, empty, an intact store, or with
    ``overwrite`` a folder whose other files do not use a store's names)."""
    root = Path(root)
    if os.path.lexists(root / MANIFEST):
        read_manifest(root)  # alignloc's own store, intact: reused, resumed or (with overwrite) replaced
        check_writable_dir(root, option)
    else:
        check_out_dir(root, STORE_NAMES, overwrite=overwrite, option=option)


def shard_relpath(side: str, kind: str, chunk: int) -> str:
    """Relative path of one shard file."""
    return f"{side}/{kind}/chunk-{chunk:05d}.safetensors"


MANIFEST_EVERY_S = 0.25  # chunks are recorded on disk at most this often (and at the end of each side, and on errors)


class StoreWriter:
    """Write a store under ``root`` for a capture ``plan`` (see capture.py), resuming if possible."""

    def __init__(self, root: str | Path, plan: dict, prompts: list[Prompt], overwrite: bool = False):
        self.root = Path(root)
        self._saved_at = float("-inf")
        if plan["dtype"] not in DTYPES:
            raise StoreError(f"storage dtype {plan['dtype']!r} is not one of {', '.join(DTYPES)}")
        self.dtype = DTYPES[plan["dtype"]]
        if os.path.lexists(self.root / MANIFEST):
            old = read_manifest(self.root)
            diff = plan_diff(old, plan)
            if diff and not overwrite:
                raise StoreError(
                    f"{self.root}: holds a different capture (differs in: {', '.join(diff)}); nothing was changed "
                    "(use another --out directory, or --overwrite to replace it)"
                )
            if diff:
                self._clear(old)
            else:
                self.manifest = old
                self._sweep_temp_files()
                if not (self.root / PROMPTS).is_file():  # interrupted right after the manifest was first written
                    atomic_write_bytes(self.root / PROMPTS, dumps_prompts(prompts).encode())
                if len(self.done_chunks()) < old["n_chunks"]:  # a shard was deleted: redo its chunk
                    self.manifest["complete"] = False
                return
        else:
            check_store_dir(self.root, overwrite)
        self.manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "alignloc_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **plan,
            "chunks": [],
            "complete": False,
        }
        # The manifest first: from then on the folder is recognisably a store (resumable, alignloc's own).
        self._save_manifest(force=True)
        atomic_write_bytes(self.root / PROMPTS, dumps_prompts(prompts).encode())

    def _sweep_temp_files(self) -> None:
        """Remove half-written temp files of the store's own files left by a killed run (see atomic_write_bytes)."""
        tops = [self.root / f".{name}." for name in (MANIFEST, PROMPTS)]
        for tmp in self.root.glob(".*.tmp"):
            if any(str(tmp).startswith(str(t)) for t in tops):
                tmp.unlink(missing_ok=True)
        for side in SIDES:
            for tmp in (self.root / side).glob("*/.chunk-*.safetensors.*.tmp"):
                tmp.unlink(missing_ok=True)

    def _clear(self, old: dict) -> None:
        """Delete the old capture's own files only (listed in its validated manifest); other files stay."""
        for chunk in old["chunks"]:
            for rel in chunk["files"]:
                (self.root / rel).unlink(missing_ok=True)
        self._sweep_temp_files()
        for side in old["models"]:
            top = self.root / side
            for d in [*(top.iterdir() if top.is_dir() else []), top]:
                if d.is_dir() and not d.is_symlink() and not any(d.iterdir()):
                    d.rmdir()
        (self.root / PROMPTS).unlink(missing_ok=True)
        (self.root / MANIFEST).unlink()

    def done_chunks(self, side: str | None = None) -> set[int]:
        """Indices of chunks whose shards (of ``side``, or of every side) are recorded and present on disk."""
        sides = self.manifest["models"] if side is None else (side,)
        return {
            c["index"]
            for c in self.manifest["chunks"]
            if all((self.root / rel).is_file() for rel in c["files"])
            and all(any(rel.startswith(f"{s}/") for rel in c["files"]) for s in sides)
        }

    def chunk_done(self, index: int) -> bool:
        """Whether chunk ``index`` has every side's shards recorded and on disk."""
        c = next((c for c in self.manifest["chunks"] if c["index"] == index), None)
        return c is not None and all((self.root / rel).is_file() for rel in c["files"]) and all(
            any(rel.startswith(f"{s}/") for rel in c["files"]) for s in self.manifest["models"])

    def write_chunk(self, index: int, start: int, end: int, acts: dict[str, dict[Site, torch.Tensor]]) -> None:
        """Write one chunk, or the part of it of the sides in ``acts`` (a capture may run one side at a
        time): ``acts[side][site]`` is ``[end-start, d_model]`` or ``[end-start, pos, d_model]``."""
        old = next((c for c in self.manifest["chunks"] if c["index"] == index and (c["start"], c["end"]) == (start, end)), None)
        files: dict[str, str] = {rel: h for rel, h in (old or {"files": {}})["files"].items()
                                 if rel.split("/", 1)[0] not in acts}
        for side, by_site in acts.items():
            kinds: dict[str, dict[str, torch.Tensor]] = {}
            for site, t in by_site.items():
                if t.shape[0] != end - start:
                    raise StoreError(f"chunk {index}: {side} {site} has {t.shape[0]} rows, expected {end - start}")
                kinds.setdefault(site.kind, {})[f"L{site.layer}"] = t.to(self.dtype).contiguous().cpu()
            for kind, tensors in kinds.items():
                rel = shard_relpath(side, kind, index)
                # One metadata key: safetensors orders several keys arbitrarily, which would break
                # byte-identical shards (and so checksum-equal stores) across runs.
                data = save(tensors, metadata={"alignloc": f"{side}/{kind}/rows={start}:{end}"})
                atomic_write_bytes(self.root / rel, data)
                files[rel] = sha256_bytes(data)
        chunks = [c for c in self.manifest["chunks"] if c["index"] != index]
        chunks.append({"index": index, "start": start, "end": end, "files": files})
        self.manifest["chunks"] = sorted(chunks, key=lambda c: c["index"])
        self._save_manifest(force=False)

    def adopt(self, side: str, source: str | Path) -> int:
        """Copy ``side``'s finished chunks from the store at ``source`` (the same capture of the same model:
        every plan field equal but the other side's model) instead of running that model again; each shard's
        checksum is verified against ``source``'s manifest. Returns how many chunks were taken."""
        source = Path(source)
        other = read_manifest(source)
        mine = {**self.manifest, "models": {side: self.manifest["models"][side]}}
        diff = plan_diff({**other, "models": {side: other["models"].get(side)}}, mine)
        if diff:
            raise StoreError(f"{source}: its {side} side is another capture (differs in: {', '.join(diff)}); "
                             "capture it again instead")
        taken = 0
        for c in other["chunks"]:
            rels = {rel: h for rel, h in c["files"].items() if rel.startswith(f"{side}/")}
            if not rels or c["index"] in self.done_chunks(side):
                continue
            mine_c = next((m for m in self.manifest["chunks"] if m["index"] == c["index"]), None)
            files = {**(mine_c["files"] if mine_c else {}), **rels}
            for rel, h in rels.items():
                data = (source / rel).read_bytes()
                if sha256_bytes(data) != h:
                    raise StoreError(f"{source / rel}: checksum differs from its manifest; capture again instead")
                atomic_write_bytes(self.root / rel, data)
            chunks = [m for m in self.manifest["chunks"] if m["index"] != c["index"]]
            self.manifest["chunks"] = sorted([*chunks, {"index": c["index"], "start": c["start"], "end": c["end"],
                                                        "files": files}], key=lambda m: m["index"])
            taken += 1
        self.flush()
        return taken

    def flush(self) -> None:
        """Record every chunk written so far in the manifest on disk (at the end of a side, or on an interruption)."""
        self._save_manifest(force=True)

    def _save_manifest(self, force: bool) -> None:
        """Write the manifest now, or (``force=False``) only when the last write is ``MANIFEST_EVERY_S`` old:
        rewriting a large manifest after every small chunk cost more than the chunks. A chunk written but
        not yet recorded is simply written again by a resumed capture."""
        now = time.monotonic()
        if force or now - self._saved_at >= MANIFEST_EVERY_S:
            atomic_write_json(self.root / MANIFEST, self.manifest)
            self._saved_at = now

    def finish(self, extra: dict | None = None) -> None:
        """Mark the store complete (all chunks written)."""
        n = self.manifest["n_chunks"]
        missing = sorted(set(range(n)) - self.done_chunks())
        if missing:
            raise StoreError(f"{self.root}: chunks {missing} were not written")
        self.manifest.update(extra or {})
        self.manifest["complete"] = True
        self._save_manifest(force=True)
