"""Capture: run both models of a pair on the same token ids, batch by batch, into a store.

Peak memory is bounded by one batch: each batch's activations are reduced to the requested
positions, written as shards, and dropped. The sides run one after the other (every batch of the
base, then of the tuned model), so with ``release=True`` only one model is in memory at a time.
A store that already holds the same capture is reused; an interrupted one resumes at its first
missing chunk of each side.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from alignloc.models.backends import DEFAULT_BACKEND, check_backend, make_backend
from alignloc.models.families import check_site
from alignloc.models.pair import SIDES, ModelPair
from alignloc.progress import iterate
from alignloc.prompts import Prompt, load_prompts, prompts_hash
from alignloc.sites import Positions, Site, parse_positions, parse_sites
from alignloc.store import DTYPES, Store, StoreError, StoreWriter, open_store
from alignloc.tokens import default_bos, encode_prompts, pad_batch, pad_id, resolve_positions


def select_positions(
    act: torch.Tensor, index: list[int], lengths: list[int], max_len: int
) -> torch.Tensor:
    """Reduce ``act [batch, pos, d]`` to ``[batch, d]`` at ``index`` (or ``[batch, max_len, d]``
    zero-padded when every index is -1, i.e. all positions are kept)."""
    if all(i == -1 for i in index):
        out = act.new_zeros((act.shape[0], max_len, act.shape[-1]))
        for b, n in enumerate(lengths):
            out[b, :n] = act[b, :n]
        return out
    return act[torch.arange(act.shape[0]), torch.tensor(index)]


def plan_capture(
    pair: ModelPair,
    prompts: list[Prompt],
    sites: list[Site],
    positions: Positions,
    batch_size: int,
    dtype: str,
    bos: bool | None = None,
) -> tuple[dict, list[list[int]]]:
    """The store plan (what the manifest records) and the token ids of every prompt."""
    for side in SIDES:
        for s in sites:
            check_site(pair.side(side).family, pair.side(side).config, s)
    tok = pair.tokenizer
    if bos is None:
        bos = default_bos(tok, pair.base.config.model_type)
    limits = [m for m in (pair.base.max_len, pair.tuned.max_len) if m]
    enc = encode_prompts(tok, prompts, bos=bos, max_len=min(limits) if limits else None)
    index = resolve_positions(prompts, enc, positions)
    n = len(prompts)
    plan = {
        "models": {side: pair.side(side).provenance() for side in SIDES},
        "sites": [s.name for s in sites],
        "positions": positions.spec,
        "dtype": dtype,
        "prompts_hash": prompts_hash(prompts),
        "chunk_size": batch_size,
        "bos": bos,
        "n_prompts": n,
        "n_chunks": (n + batch_size - 1) // batch_size,
        "lengths": enc.lengths,
        "position_index": index,
        "max_len": max(enc.lengths),
    }
    return plan, enc.ids


def capture(
    pair: ModelPair,
    prompts: list[Prompt] | str | Path,
    out: str | Path,
    sites: str | list[str] = "resid_post",
    positions: str | int = "last",
    layers: str | None = None,
    batch_size: int = 16,
    dtype: str = "float32",
    backend: str = DEFAULT_BACKEND,
    overwrite: bool = False,
    progress: bool | None = None,
    bos: bool | None = None,
    on_chunk: Callable[[int], None] | None = None,
    release: bool = False,
    reuse: dict[str, str | Path] | None = None,
) -> Store:
    """Capture ``sites`` of both models on ``prompts`` into the store at ``out`` and open it.

    ``sites`` like ``"resid_post,attn_out.3"`` (a bare kind means every layer in ``layers``);
    ``positions`` is ``last``, ``all``, an int or a named position; ``dtype`` the storage dtype.
    ``progress=False`` reports nothing (else ``alignloc.progress`` decides: a bar on a terminal, a line per
    side otherwise). ``on_chunk(i)`` is called once chunk ``i`` of every side is safely on disk. ``release`` frees
    each model after its side is captured (``LoadedModel.release``; it reloads when used again),
    except the last, so the next analysis can use it. ``reuse`` maps a side to a store holding the same capture
    of that side's model (e.g. ``{"base": ...}`` for a control pair sharing the base): its chunks are copied
    (checksums verified), and that model runs only for chunks the other store lacks.
    """
    if not isinstance(prompts, list):
        prompts = load_prompts(prompts)
    if dtype not in DTYPES:
        raise StoreError(f"--dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    check_backend(backend)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    site_list = parse_sites(sites, pair.n_layers, layers)
    pos = parse_positions(positions)
    plan, ids = plan_capture(pair, prompts, site_list, pos, batch_size, dtype, bos)
    writer = StoreWriter(out, plan, prompts, overwrite=overwrite)
    if writer.manifest.get("complete"):
        return open_store(out)
    for side, source in (reuse or {}).items():
        writer.adopt(side, source)
    pid = pad_id(pair.tokenizer)
    order = sorted(SIDES, key=lambda side: not pair.side(side).resident)  # a model already in memory goes first
    try:
        for k, side in enumerate(order):
            todo = [i for i in range(plan["n_chunks"]) if i not in writer.done_chunks(side)]
            if not todo:
                continue
            be = make_backend(backend, pair.side(side))
            for i in (todo if progress is False else iterate(todo, f"capture {side} -> {out}", unit="batch")):
                start, end = i * batch_size, min((i + 1) * batch_size, plan["n_prompts"])
                input_ids, mask = pad_batch(ids[start:end], pid)
                rows = plan["position_index"][start:end]
                lens = plan["lengths"][start:end]
                acts = be.run(input_ids, mask, site_list)
                chunk = {side: {s: select_positions(acts[s].float(), rows, lens, plan["max_len"]) for s in site_list}}
                del acts
                writer.write_chunk(i, start, end, chunk)
                if on_chunk is not None and writer.chunk_done(i):
                    writer.flush()  # "safely on disk" includes the manifest's record of it
                    on_chunk(i)
            writer.flush()  # this side's chunks are on record before the next model loads
            del be
            if release and k < len(order) - 1:
                pair.side(side).release()
    except BaseException:
        writer.flush()  # what was written stays recorded: a rerun resumes after it
        raise
    writer.finish({"backend": backend})
    return open_store(out)
