"""Stream activations to disk chunk by chunk: atomic shard writes, resumable, checksummed.

A chunk is one batch of prompts. Each chunk writes one safetensors file per (side, site kind),
holding one tensor per layer, then records the files' sha256 in the manifest (atomically). A
killed capture leaves a manifest that lists only complete chunks, so rerunning the same
command resumes at the first missing chunk.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch
from safetensors.torch import save

from alignloc import __version__
from alignloc.prompts import Prompt, save_prompts
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

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def shard_relpath(side: str, kind: str, chunk: int) -> str:
    """Relative path of one shard file."""
    return f"{side}/{kind}/chunk-{chunk:05d}.safetensors"


class StoreWriter:
    """Write a store under ``root`` for a capture ``plan`` (see capture.py), resuming if possible."""

    def __init__(self, root: str | Path, plan: dict, prompts: list[Prompt], overwrite: bool = False):
        self.root = Path(root)
        if plan["dtype"] not in DTYPES:
            raise StoreError(f"storage dtype {plan['dtype']!r} is not one of {', '.join(DTYPES)}")
        self.dtype = DTYPES[plan["dtype"]]
        if (self.root / MANIFEST).exists():
            old = read_manifest(self.root)
            diff = plan_diff(old, plan)
            if diff and not overwrite:
                raise StoreError(
                    f"{self.root}: holds a different capture (differs in: {', '.join(diff)}). "
                    "Nothing was changed. Use another --out directory, or --overwrite to replace it."
                )
            if diff:
                self._clear(old)
            else:
                self.manifest = old
                self._sweep_temp_files()
                if len(self.done_chunks()) < old["n_chunks"]:  # a shard was deleted: redo its chunk
                    self.manifest["complete"] = False
                return
        elif self.root.exists() and any(self.root.iterdir()) and not overwrite:
            raise StoreError(
                f"{self.root}: directory exists and is not an activation store; "
                "choose an empty or new --out directory (nothing was written)"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        save_prompts(prompts, self.root / "prompts.jsonl")
        self.manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "alignloc_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **plan,
            "chunks": [],
            "complete": False,
        }
        atomic_write_json(self.root / MANIFEST, self.manifest)

    def _sweep_temp_files(self) -> None:
        """Remove half-written temp files left by a killed run (see atomic_write_bytes)."""
        for tmp in self.root.rglob(".*.tmp"):
            tmp.unlink(missing_ok=True)

    def _clear(self, old: dict) -> None:
        for side in old.get("models", {}):
            shutil.rmtree(self.root / side, ignore_errors=True)
        (self.root / MANIFEST).unlink()

    def done_chunks(self) -> set[int]:
        """Indices of chunks whose shards are recorded and present on disk."""
        return {
            c["index"]
            for c in self.manifest["chunks"]
            if all((self.root / rel).is_file() for rel in c["files"])
        }

    def write_chunk(self, index: int, start: int, end: int, acts: dict[str, dict[Site, torch.Tensor]]) -> None:
        """Write one chunk: ``acts[side][site]`` is ``[end-start, d_model]`` or ``[end-start, pos, d_model]``."""
        files: dict[str, str] = {}
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
        atomic_write_json(self.root / MANIFEST, self.manifest)

    def finish(self, extra: dict | None = None) -> None:
        """Mark the store complete (all chunks written)."""
        n = self.manifest["n_chunks"]
        missing = sorted(set(range(n)) - self.done_chunks())
        if missing:
            raise StoreError(f"{self.root}: chunks {missing} were not written")
        self.manifest.update(extra or {})
        self.manifest["complete"] = True
        atomic_write_json(self.root / MANIFEST, self.manifest)
