"""Activation patching, batched: which site's activation carries the gap between two runs?

Two settings share one engine:

- **cross-model** (``patch_sweep``): the *recipient* model (default: base) runs on the same tokens
  as the *donor* (tuned) with one site replaced by the donor's activation;
- **within-model** (``within_sweep``): one model runs on a prompt's ``corrupt_text`` with one site
  replaced by its own activation on the clean ``text`` (the ROME / TransformerLens setting), in
  either model of a pair, so the two models' circuits for one task can be compared.

Reported per cell: ``recovered = (M(recipient + patch) - M(recipient)) / (M(donor) - M(recipient))``
(means over prompts; metrics in ``alignloc.causal.metrics``). With
``direction="base_into_tuned"`` the same formula tells how much the tuned model *keeps*.

Cells are layers (``positions="all"`` or ``"last"``) or layer x position (``"each"``: every
position counted back from the last context token, for heatmaps). Many cells share one forward:
the batch is repeated once per cell (``[n_cells * b, pos]``, at most ``max_rows`` rows per
forward) and each cell's hook patches only its own copy, so a sweep does not cost one
Python-level forward per cell.
"""

from __future__ import annotations

from contextlib import ExitStack

import torch

from alignloc.causal.metrics import ScoredBatch, resolve_metric, score, scored_batch, scored_logits
from alignloc.models.hooks import edit, record
from alignloc.models.pair import LoadedModel, ModelPair
from alignloc.prompts import Prompt
from alignloc.sites import Site
from alignloc.tokens import encode_prompts

DIRECTIONS = ("tuned_into_base", "base_into_tuned")
POSITIONS = ("all", "last", "each")
Cell = tuple[Site, int | None]  # (site, offset from the last context token; None = all positions)


def _patch_fn(donor_act: torch.Tensor, items: list[tuple[int, int | None]], batch: ScoredBatch):
    """Hook body: in copy ``i`` of the batch, overwrite the positions of its cell with the donor's."""
    b, last = donor_act.shape[0], batch.last
    rows = torch.arange(b)

    def fn(act: torch.Tensor) -> torch.Tensor:
        act = act.clone()
        for i, offset in items:
            block = act[i * b : (i + 1) * b]  # a view: writes go through
            if offset is None:
                block[:] = donor_act.to(act.device, act.dtype)
            else:
                block[rows, last + offset] = donor_act[rows, last + offset].to(act.device, act.dtype)
        return act

    return fn


def forward_recording(model: LoadedModel, batch: ScoredBatch, sites: list[Site]):
    """``(scored logits, {site: activation})`` from one forward on ``batch``."""
    with record(model.model, model.family, sites, stop=False) as acts:
        logits = scored_logits(model, batch)
    return logits, dict(acts)


def run_cells(recipient: LoadedModel, ids: torch.Tensor, batch: ScoredBatch, donor_acts: dict[Site, torch.Tensor],
              cells: list[Cell], metric: str, ref_logprobs: torch.Tensor | None = None,
              max_rows: int = 256) -> torch.Tensor:
    """Metric ``[n_cells, b]`` of the recipient on ``ids`` with each cell patched from ``donor_acts``.

    Cells are packed ``max_rows // b`` to a forward, each in its own copy of the batch.
    """
    b = ids.shape[0]
    per = max(1, max_rows // b)
    out = []
    for c0 in range(0, len(cells), per):
        chunk = cells[c0 : c0 + per]
        by_site: dict[Site, list[tuple[int, int | None]]] = {}
        for i, (site, offset) in enumerate(chunk):
            by_site.setdefault(site, []).append((i, offset))
        with ExitStack() as stack:
            for site, items in by_site.items():
                stack.enter_context(edit(recipient.model, recipient.family, site, _patch_fn(donor_acts[site], items, batch)))
            logits = scored_logits(recipient, batch, ids.repeat(len(chunk), 1))
        out.append(score(logits, batch, metric, ref_logprobs).view(len(chunk), b))
    return torch.cat(out)


def context_offsets(tokenizer, prompts: list[Prompt], bos: bool, max_len: int | None, window: int | None) -> list[int]:
    """Offsets from the last context token that every prompt has (the ``window`` last ones if given)."""
    shortest = min(len(x) for x in encode_prompts(tokenizer, prompts, bos=bos, max_len=max_len).ids)
    n = shortest if window is None else min(window, shortest)
    return list(range(-n + 1, 1))


def _token_labels(tokenizer, batch: ScoredBatch, offsets: list[int]) -> list[str]:
    """Each offset's token if all prompts share it there, else ``*``."""
    out = []
    for o in offsets:
        toks = {int(batch.ids[r, n - 1 + o]) for r, n in enumerate(batch.ctx_lens)}
        out.append(tokenizer.decode([toks.pop()]) if len(toks) == 1 else "*")
    return out


@torch.no_grad()
def _sweep(recipient: LoadedModel, donor: LoadedModel, tokenizer, prompts: list[Prompt], kind: str,
           layers: list[int], positions: str, metric: str, bos: bool, batch_size: int, corrupt: bool,
           window: int | None, max_rows: int) -> dict:
    """The shared body of ``patch_sweep`` and ``within_sweep``."""
    if positions not in POSITIONS:
        raise ValueError(f"positions must be one of {POSITIONS}, got {positions!r}")
    chosen = [p for p in prompts if p.target]
    if not chosen:
        raise ValueError("patching needs prompts with a 'target' to score")
    metric = resolve_metric(metric, chosen)
    sites = [Site(layer, kind) for layer in layers]
    max_len = recipient.max_len
    offsets = {"all": [None], "last": [0]}.get(positions) or context_offsets(tokenizer, chosen, bos, max_len, window)
    cells = [(s, o) for s in sites for o in offsets]
    m_rec, m_don, m_patch, labels = [], [], [], None
    for s in range(0, len(chosen), batch_size):
        part = chosen[s : s + batch_size]
        clean = scored_batch(tokenizer, part, bos, max_len)
        rec_ids = scored_batch(tokenizer, part, bos, max_len, text="corrupt_text", like=clean).ids if corrupt else clean.ids
        donor_logits, donor_acts = forward_recording(donor, clean, sites)
        ref = torch.log_softmax(donor_logits.float(), -1) if metric == "kl" else None
        m_don.append(score(donor_logits, clean, metric, ref))
        m_rec.append(score(scored_logits(recipient, clean, rec_ids), clean, metric, ref))
        m_patch.append(run_cells(recipient, rec_ids, clean, donor_acts, cells, metric, ref, max_rows))
        if labels is None and positions == "each":
            labels = _token_labels(tokenizer, clean, offsets)
    rec, don, patched = torch.cat(m_rec), torch.cat(m_don), torch.cat(m_patch, dim=1)  # [n], [n], [cell, n]
    gap = float(don.mean() - rec.mean())
    means = patched.mean(dim=1)
    recovered = (means - rec.mean()) / gap if gap else torch.full_like(means, float("nan"))
    out = {"kind": kind, "positions": positions, "metric": metric, "layers": layers, "n": len(chosen),
           "recipient": float(rec.mean()), "donor": float(don.mean()), "gap": gap}
    if positions == "each":
        grid = (len(layers), len(offsets))
        out.update(offsets=offsets, tokens=labels, patched=means.view(grid).tolist(),
                   recovered=recovered.view(grid).tolist())
    else:
        out.update(patched=means.tolist(), recovered=recovered.tolist())
    return out


def patch_sweep(pair: ModelPair, prompts: list[Prompt], kind: str = "resid_post", layers: list[int] | None = None,
                positions: str = "all", direction: str = "tuned_into_base", metric: str = "logprob",
                bos: bool = True, batch_size: int = 8, window: int | None = None, max_rows: int = 256) -> dict:
    """Cross-model patching: recovered fraction of the gap per layer (or layer x position) for ``kind``.

    ``positions``: ``all`` (every token of text + target), ``last`` (the last context token, the
    one that predicts the first target token) or ``each`` (a ``[layer][offset]`` grid over the
    ``window`` last context tokens; all of them by default). ``metric``: ``logprob``,
    ``logit_diff``, ``kl`` (to the donor's output) or ``auto``. Returns JSON-ready lists.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    recipient, donor = (pair.base, pair.tuned) if direction == "tuned_into_base" else (pair.tuned, pair.base)
    layers = list(range(pair.n_layers)) if layers is None else layers
    out = _sweep(recipient, donor, pair.tokenizer, prompts, kind, layers, positions, metric, bos, batch_size,
                 corrupt=False, window=window, max_rows=max_rows)
    return {"setting": "cross_model", "direction": direction, **out}


def within_sweep(pair: ModelPair, prompts: list[Prompt], side: str = "base", kind: str = "resid_post",
                 layers: list[int] | None = None, positions: str = "each", metric: str = "auto",
                 bos: bool = True, batch_size: int = 8, window: int | None = None, max_rows: int = 256) -> dict:
    """Within-model patching in one side of the pair: clean activations into the ``corrupt_text`` run.

    ``recovered = (M(corrupt + clean patch) - M(corrupt)) / (M(clean) - M(corrupt))``, scored on
    the clean ``target`` (``auto``: logit difference to the ``foil`` where prompts have one). Clean
    and corrupted prompts must tokenize to the same length. Same cells and output as ``patch_sweep``.
    """
    if side not in ("base", "tuned"):
        raise ValueError(f"side must be 'base' or 'tuned', got {side!r}")
    model = pair.base if side == "base" else pair.tuned
    layers = list(range(pair.n_layers)) if layers is None else layers
    out = _sweep(model, model, pair.tokenizer, prompts, kind, layers, positions, metric, bos, batch_size,
                 corrupt=True, window=window, max_rows=max_rows)
    return {"setting": "within_model", "side": side, **out}
