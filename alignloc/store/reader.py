"""Read a store lazily: one (side, site, layer) at a time, every shard checksummed on first read."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import torch
from safetensors import safe_open

from alignloc.errors import one_line
from alignloc.prompts import Prompt, load_prompts, prompts_hash
from alignloc.sites import Site, parse_site
from alignloc.store.manifest import StoreError, read_manifest, sha256_file


class Store:
    """A captured activation store. ``get(side, "resid_post", layer=3)`` -> ``[n_prompts, (pos,) d_model]``."""

    def __init__(self, root: str | Path, verify: bool = True):
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        self.verify = verify
        self._verified: set[str] = set()
        if not self.manifest["complete"]:
            raise StoreError(
                f"{self.root}: capture is incomplete ({progress(self.manifest)}) "
                "(rerun the same capture command to resume it)"
            )

    @property
    def sides(self) -> list[str]:
        """Model sides in the store (``base``, ``tuned``)."""
        return list(self.manifest["models"])

    @property
    def sites(self) -> list[Site]:
        """Captured sites in forward order."""
        return [parse_site(s) for s in self.manifest["sites"]]

    @property
    def n_prompts(self) -> int:
        """Number of captured prompts (rows)."""
        return int(self.manifest["n_prompts"])

    @property
    def positions(self) -> str:
        """The position selector used (``last``, ``all``, an index or a name)."""
        return self.manifest["positions"]

    @property
    def lengths(self) -> list[int]:
        """Token length of each prompt."""
        return list(self.manifest["lengths"])

    @property
    def position_index(self) -> list[int]:
        """Token index kept for each prompt (-1 when all positions are kept)."""
        return list(self.manifest["position_index"])

    @cached_property
    def prompts(self) -> list[Prompt]:
        """The captured prompt set (checked against the manifest's count and hash)."""
        path = self.root / "prompts.jsonl"
        if not path.is_file():
            raise StoreError(f"{path}: the store's prompt file is missing (capture again into a new --out)")
        prompts = load_prompts(path)
        if len(prompts) != self.n_prompts or prompts_hash(prompts) != self.manifest["prompts_hash"]:
            raise StoreError(f"{path}: the prompts differ from those captured ({len(prompts)} prompts, hash "
                             f"{prompts_hash(prompts)}; the manifest says {self.n_prompts}, {self.manifest['prompts_hash']!r}) "
                             "(restore the file or capture again)")
        return prompts

    def mask(self) -> torch.Tensor:
        """``[n_prompts, max_len]`` bool mask of real tokens (for positions=all)."""
        width = self.manifest["max_len"]
        return torch.arange(width)[None, :] < torch.tensor(self.lengths)[:, None]

    def _check_file(self, rel: str, sha: str) -> Path:
        path = self.root / rel
        if not path.is_file():
            raise StoreError(
                f"{path}: shard is missing (rerun the same capture command: only the missing chunks are captured again)"
            )
        if self.verify and rel not in self._verified:
            if sha256_file(path) != sha:
                raise StoreError(
                    f"{path}: checksum mismatch, the shard is corrupted (delete this file and rerun the same "
                    "capture command: only the missing chunk is captured again)"
                )
            self._verified.add(rel)
        return path

    def get(self, side: str, site: str | Site, layer: int | None = None) -> torch.Tensor:
        """Activations of ``side`` at a site: ``[n_prompts, d_model]`` or ``[n_prompts, max_len, d_model]``."""
        if side not in self.manifest["models"]:
            raise StoreError(f"{self.root}: no side {side!r} (the store has {', '.join(self.sides)})")
        if isinstance(site, str):
            site = parse_site(site) if layer is None else Site(layer, site)
        if site.name not in self.manifest["sites"]:
            raise StoreError(f"{self.root}: site {site} was not captured (captured: {', '.join(self.manifest['sites'])})")
        key = f"L{site.layer}"
        m = self.manifest
        parts = []
        for chunk in m["chunks"]:
            rel = f"{side}/{site.kind}/chunk-{chunk['index']:05d}.safetensors"
            path = self._check_file(rel, chunk["files"][rel])
            try:
                with safe_open(str(path), framework="pt") as f:
                    t = f.get_tensor(key)
            except Exception as e:  # safetensors raises its own error types for bad headers
                raise StoreError(f"{path}: cannot read tensor {key} ({one_line(e)}) (the shard is corrupted: delete it "
                                 "and rerun the same capture command)") from e
            rows = chunk["end"] - chunk["start"]
            want = (rows, m["max_len"], m["models"][side]["d_model"]) if m["positions"] == "all" else \
                (rows, m["models"][side]["d_model"])
            if tuple(t.shape) != want:
                raise StoreError(f"{path}: tensor {key} has shape {tuple(t.shape)}, the manifest expects {want} "
                                 "(the store is corrupted: capture again into a new --out)")
            parts.append(t)
        return torch.cat(parts)

    def verify_all(self) -> int:
        """Checksum every shard and check the prompt file; return how many shards were checked (StoreError on the first bad one)."""
        n = 0
        for chunk in self.manifest["chunks"]:
            for rel, sha in chunk["files"].items():
                self._verified.discard(rel)
                self._check_file(rel, sha)
                n += 1
        self.__dict__.pop("prompts", None)
        _ = self.prompts
        return n

    def summary(self) -> str:
        """A human-readable description (``alignloc info``)."""
        m = self.manifest
        lines = [f"store: {self.root}", f"alignloc {m['alignloc_version']}, created {m['created']}"]
        for side, info in m["models"].items():
            lines.append(
                f"{side:>5}: {info['ref']} ({info['model_type']}, {info['n_layers']} layers, d={info['d_model']}, "
                f"sha256 {info['weights_sha256'][:12]})"
            )
        kinds = sorted({s.split('.')[0] for s in m["sites"]})
        layers = sorted({int(s.split('.')[1]) for s in m["sites"]})
        lines += [
            f"prompts: {m['n_prompts']} (hash {m['prompts_hash']}), positions: {m['positions']}, bos: {m['bos']}",
            f"sites: {', '.join(kinds)} at layers {layers[0]}..{layers[-1]} ({len(m['sites'])} sites)",
            f"dtype: {m['dtype']}, chunks: {len(m['chunks'])} x {m['chunk_size']} prompts, backend: {m.get('backend')}",
        ]
        files = [self.root / r for c in m["chunks"] for r in c["files"]]
        present = [f for f in files if f.is_file()]
        missing = f" ({len(files) - len(present)} of {len(files)} shards missing)" if len(present) < len(files) else ""
        lines.append(f"size on disk: {sum(f.stat().st_size for f in present) / 2**20:.2f} MiB{missing}")
        return "\n".join(lines)


def progress(manifest: dict) -> str:
    """How much of a capture a manifest records, e.g. ``3 of 8 chunks``, or, while the sides are
    captured one after the other, ``0 of 8 chunks (base: 3 of 8, tuned: 0 of 8)``."""
    kinds = len({name.partition(".")[0] for name in manifest["sites"]})
    n, sides = manifest["n_chunks"], list(manifest["models"])
    complete = [{s for s in sides if sum(rel.startswith(f"{s}/") for rel in c["files"]) == kinds}
                for c in manifest["chunks"]]  # per chunk: the sides whose every site kind is written
    per_side = {s: sum(s in c for c in complete) for s in sides}
    done = sum(len(c) == len(sides) for c in complete)
    if len(set(per_side.values())) <= 1:
        return f"{done} of {n} chunks"
    return f"{done} of {n} chunks (" + ", ".join(f"{s}: {k} of {n}" for s, k in per_side.items()) + ")"


def open_store(root: str | Path, verify: bool = True) -> Store:
    """Open a complete store for reading (checksums verified lazily unless ``verify=False``)."""
    return Store(root, verify=verify)
