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
position counted back from the last context token, for heatmaps).

Engine (``reuse_prefix=True``, the default): a patch at (layer L, position p) leaves blocks below
L and positions before p as in the unpatched recipient run, so each patched prompt *resumes* that
run (``alignloc.models.resume``): it enters block L with the recorded residual, keeps the
recorded keys/values of its own positions before ``p`` as a KV cache, and computes blocks
``L..n-1`` on positions ``p..`` up to its last scored one only. The (cell, prompt) items of one
site are grouped by that length into forwards of up to ``max_rows`` rows (``pack``). A sweep then
costs what it changes: a per-layer sweep about half of one full forward per cell, a layer x
position grid over the last ``w`` of ``T`` tokens about ``w / 4T`` of it; a cell whose donor
values equal the recipient's own where it writes (below the first layer a fine-tune changed, or
before the corrupted token within a model) is the unpatched run and costs nothing. Before the
first batch the engine checks that resuming the unpatched run gives its logits back; where it
does not (an architecture whose blocks pass other state between layers), and with
``reuse_prefix=False``, every cell runs the full forward instead: the batch is repeated once per
cell (``[n_cells * b, pos]``, at most ``max_rows`` rows per forward) and each cell's hook patches
only its own copy.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack, nullcontext
from typing import NamedTuple

import torch
from jaxtyping import Float, Int

from alignloc.causal.metrics import (
    ScoredBatch,
    pack,
    resolve_metric,
    score,
    scored_batch,
    scored_logits,
)
from alignloc.models.hooks import edit, record, unembed_at
from alignloc.models.pair import LoadedModel, ModelPair
from alignloc.models.resume import Prefix, record_prefix, resume, resumes_exactly, window
from alignloc.progress import iterate
from alignloc.prompts import Prompt
from alignloc.sites import Site
from alignloc.tokens import encode_prompts

DIRECTIONS = ("tuned_into_base", "base_into_tuned")
POSITIONS = ("all", "last", "each")
Cell = tuple[Site, int | None]  # (site, offset from the last context token; None = all positions)
log = logging.getLogger(__name__)


def _patch_fn(donor_act: Float[torch.Tensor, "b pos d_model"], at: Int[torch.Tensor, " m"],
              rows: Int[torch.Tensor, " m"], pos: Int[torch.Tensor, " m"], starts: Int[torch.Tensor, " m"]):
    """Hook body: item ``i`` writes the donor's row ``rows[i]`` into row ``at[i]`` of the activation,
    at position ``pos[i]`` (``-1``: every position). The activation's row ``at[i]`` holds positions
    ``starts[i]..`` (0 in a full forward; later in a resumed one)."""
    one, every = pos >= 0, pos < 0

    def fn(act: torch.Tensor) -> torch.Tensor:
        act = act.clone()
        if one.any():
            act[at[one], pos[one] - starts[one]] = donor_act[rows[one], pos[one]].to(act.device, act.dtype)
        if every.any():
            act[at[every]] = window(donor_act[rows[every]], starts[every], act.shape[1]).to(act.device, act.dtype)
        return act

    return fn


def _written(batch: ScoredBatch, offset: int | None) -> Int[torch.Tensor, " b"]:
    """The position a cell writes in each row: ``last + offset``, or ``-1`` (every position)."""
    return torch.full_like(batch.last, -1) if offset is None else batch.last + offset


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
        by_site: dict[Site, list[int]] = {}
        for i, (site, _) in enumerate(chunk):
            by_site.setdefault(site, []).append(i)
        with ExitStack() as stack:
            for site, copies in by_site.items():
                at = torch.cat([i * b + torch.arange(b) for i in copies])
                pos = torch.cat([_written(batch, chunk[i][1]) for i in copies])
                fn = _patch_fn(donor_acts[site], at, torch.arange(b).repeat(len(copies)), pos, torch.zeros_like(at))
                stack.enter_context(edit(recipient.model, recipient.family, site, fn))
            logits = scored_logits(recipient, batch, ids.repeat(len(chunk), 1))
        out.append(score(logits, batch, metric, ref_logprobs).view(len(chunk), b))
    return torch.cat(out)


def scored_end(batch: ScoredBatch) -> int:
    """One past the last position whose logits a metric reads (later positions cannot change it)."""
    return int(batch.index.max()) + 1


def prefix_scored(prefix: Prefix, batch: ScoredBatch) -> torch.Tensor:
    """The recorded run's logits at ``batch.index``: ``[b, k, d_vocab]``, as ``score`` reads them."""
    return torch.take_along_dim(prefix.logits, batch.index.to(prefix.logits.device)[..., None], dim=1).float().cpu()


def _entry(site: Site) -> tuple[int, bool]:
    """``(block to enter, whether the patch is applied to the entering residual itself)``."""
    if site.kind == "resid_pre":
        return site.layer, True
    if site.kind == "resid_post":
        return site.layer + 1, True
    return site.layer, False  # attn_out, resid_mid, mlp_out: a hook inside the entered block


def entry_layers(sites: list[Site]) -> list[int]:
    """Blocks whose recorded input a resumed sweep over ``sites`` enters with."""
    return sorted({_entry(s)[0] for s in sites})


def run_cells_resumed(recipient: LoadedModel, ids: torch.Tensor, batch: ScoredBatch, prefix: Prefix,
                      donor_acts: dict[Site, torch.Tensor], cells: list[Cell], metric: str,
                      ref_logprobs: torch.Tensor | None = None, max_rows: int = 256) -> torch.Tensor:
    """Metric ``[n_cells, b]`` as ``run_cells``, each cell resuming the recipient's recorded run.

    Each (cell, prompt) item patching position ``p = last + offset`` computes the positions from
    ``p`` up to its prompt's last scored one, from block ``L`` (``L + 1`` for ``resid_post``) on:
    items of one site, of all cells and prompts, are grouped by length into forwards (``pack``).
    A cell whose donor values equal the recipient's own where it writes (``prefix.acts``) is the
    unpatched run, and is not run again.
    """
    b = ids.shape[0]
    row_end = batch.row_end  # [b]: one past each row's last scored position
    unpatched = score(prefix_scored(prefix, batch), batch, metric, ref_logprobs)
    out = unpatched.repeat(len(cells), 1)  # [n_cells, b]
    by_site: dict[Site, list[int]] = {}
    for i, (site, offset) in enumerate(cells):
        if site in prefix.acts and _same_where_patched(donor_acts[site], prefix.acts[site], batch, offset,
                                                       scored_end(batch)):
            continue  # the patch writes what is already there: the run is the unpatched one
        by_site.setdefault(site, []).append(i)
    for site, todo in by_site.items():
        cell = torch.tensor(todo).repeat_interleave(b)  # items: (cell, row), [m]
        rows = torch.arange(b).repeat(len(todo))
        pos = torch.cat([_written(batch, cells[i][1]) for i in todo])
        starts = pos.clamp(min=0)
        lengths = row_end[rows] - starts
        enter, on_entry = _entry(site)
        for group in pack(lengths.tolist(), max_rows):
            g = torch.tensor(group)
            r, s, new = rows[g], starts[g], int(lengths[g].max())
            fn = _patch_fn(donor_acts[site], torch.arange(len(g)), r, pos[g], s)
            hidden = window(prefix.resid[enter][r.to(prefix.resid[enter].device)], s, new)
            with (nullcontext() if on_entry else edit(recipient.model, recipient.family, site, fn),
                  unembed_at(recipient.model, recipient.family, batch.index[r] - s[:, None])):  # scored positions
                logits = resume(recipient.model, recipient.family, prefix, enter, r, s,
                                fn(hidden) if on_entry else hidden, ids)
            ref = None if ref_logprobs is None else ref_logprobs[r]
            out[cell[g], r] = score(logits.float().cpu(), batch.take(r), metric, ref)
    return out


def _same_where_patched(donor: torch.Tensor, own: torch.Tensor, batch: ScoredBatch, offset: int | None,
                        end: int) -> bool:
    """True when the donor's activation equals the recipient's own at every position a cell writes
    that can reach a scored position (e.g. below the first layer a fine-tune changed)."""
    if offset is None:
        real = batch.mask[:, :end].bool()
        return torch.equal(donor[:, :end][real], own[:, :end][real])
    rows, at = torch.arange(donor.shape[0]), batch.last + offset
    return torch.equal(donor[rows, at], own[rows, at])


def can_resume(recipient: LoadedModel, ids: torch.Tensor, batch: ScoredBatch, prefix: Prefix) -> bool:
    """Whether resuming the unpatched run mid-network and mid-sequence gives its logits back."""
    layer = sorted(prefix.resid)[len(prefix.resid) // 2]
    dtype = next(recipient.model.parameters()).dtype
    rtol = 1e-4 if dtype == torch.float32 else 2e-2
    try:
        return resumes_exactly(recipient.model, recipient.family, prefix, ids, layer, batch.last, rtol)
    except (TypeError, ValueError, RuntimeError, AttributeError) as e:  # a family whose forward will not resume
        log.warning("patching: %s cannot resume a recorded forward (%s: %s)", recipient.ref, type(e).__name__, e)
        return False


def context_offsets(tokenizer, prompts: list[Prompt], bos: bool, max_len: int | None, window: int | None) -> list[int]:
    """Offsets from the last context token that every prompt has (the ``window`` last ones if given)."""
    shortest = min(len(x) for x in encode_prompts(tokenizer, prompts, bos=bos, max_len=max_len).ids)
    n = shortest if window is None else min(window, shortest)
    return list(range(-n + 1, 1))


def _offset_tokens(batch: ScoredBatch, offsets: list[int], seen: list[set[int]]) -> None:
    """Add the token at each offset of each row of ``batch`` to ``seen[offset index]``."""
    for i, o in enumerate(offsets):
        seen[i] |= {int(batch.ids[r, n - 1 + o]) for r, n in enumerate(batch.ctx_lens)}


def _token_labels(tokenizer, seen: list[set[int]]) -> list[str]:
    """Each offset's token if all prompts share it there, else ``*``."""
    return [tokenizer.decode([next(iter(t))]) if len(t) == 1 else "*" for t in seen]


def by_length(tokenizer, prompts: list[Prompt], bos: bool, max_len: int | None) -> list[Prompt]:
    """``prompts`` sorted by context length (stable), so a batch's rows share their last position."""
    lens = [len(x) for x in encode_prompts(tokenizer, prompts, bos=bos, max_len=max_len).ids]
    return [prompts[i] for i in sorted(range(len(prompts)), key=lens.__getitem__)]


def _cells(grid: Float[torch.Tensor, "layer offset"], ran: torch.Tensor) -> list[list[float | None]]:
    """A grid as JSON-ready rows; a cell not run (``ran`` False) is None."""
    return [[v if r else None for v, r in zip(row, run_row, strict=True)] for row, run_row in zip(grid.tolist(), ran.tolist(), strict=True)]


class Job(NamedTuple):
    """One sweep of a multi-sweep call: a site kind, its layers (None: all), which positions (``POSITIONS``) and the
    grid's ``window`` (``each``)."""

    kind: str
    layers: list[int] | None = None
    positions: str = "all"
    window: int | None = None
    cells: list[tuple[int, int]] | None = None  # ``each``: the (layer, offset) cells to patch (None: every one)


@torch.no_grad()
def _sweeps(recipient: LoadedModel, donor: LoadedModel, tokenizer, prompts: list[Prompt], jobs: list[Job],
            metric: str, bos: bool, batch_size: int, corrupt: bool, max_rows: int, reuse_prefix: bool) -> list[dict]:
    """The shared body of ``patch_sweep(s)`` and ``within_sweep``: every job's cells from one recorded run of each
    model per batch (the recipient's run, entered at every job's blocks, and the donor's activations at every site)."""
    if bad := [j.positions for j in jobs if j.positions not in POSITIONS]:
        raise ValueError(f"positions must be one of {POSITIONS}, got {bad[0]!r}")
    chosen = [p for p in prompts if p.target]
    if not chosen:
        raise ValueError("patching needs prompts with a 'target' to score")
    metric = resolve_metric(metric, chosen)
    max_len = recipient.max_len
    n_layers = recipient.model.config.num_hidden_layers
    sites = [[Site(layer, j.kind) for layer in (range(n_layers) if j.layers is None else j.layers)] for j in jobs]
    every = list(dict.fromkeys(s for job_sites in sites for s in job_sites))
    offsets = [{"all": [None], "last": [0]}.get(j.positions) or context_offsets(tokenizer, chosen, bos, max_len, j.window)
               for j in jobs]
    keep = [None if j.cells is None else set(j.cells) for j in jobs]
    cells = [[(s, o) for s in job_sites for o in offs if wanted is None or (s.layer, o) in wanted]
             for wanted, job_sites, offs in zip(keep, sites, offsets, strict=True)]
    chosen = by_length(tokenizer, chosen, bos, max_len)  # per-prompt scores: the order does not change the means
    m_rec, m_don = [], []
    m_patch: list[list[torch.Tensor]] = [[] for _ in jobs]
    seen = [[set() for _ in offs] for offs in offsets]
    kinds = ", ".join(dict.fromkeys(j.kind for j in jobs))
    label = f"patching {kinds} ({'within ' + recipient.ref if corrupt else recipient.ref + ' <- ' + donor.ref})"
    for s in iterate(range(0, len(chosen), batch_size), label, unit="batch"):
        part = chosen[s : s + batch_size]
        clean = scored_batch(tokenizer, part, bos, max_len)
        rec_ids = scored_batch(tokenizer, part, bos, max_len, text="corrupt_text", like=clean).ids if corrupt else clean.ids
        donor_logits, donor_acts = forward_recording(donor, clean, every)
        ref = torch.log_softmax(donor_logits.float(), -1) if metric == "kl" else None
        m_don.append(score(donor_logits, clean, metric, ref))
        if reuse_prefix:
            prefix = record_prefix(recipient.model, recipient.family, rec_ids, clean.mask, entry_layers(every), every)
            if s == 0 and not can_resume(recipient, rec_ids, clean, prefix):
                log.warning("patching: resuming %s's forward does not reproduce it; running full forwards",
                            recipient.ref)
                reuse_prefix = False
        if reuse_prefix:
            m_rec.append(score(prefix_scored(prefix, clean), clean, metric, ref))
        else:
            m_rec.append(score(scored_logits(recipient, clean, rec_ids), clean, metric, ref))
        for i, job_cells in enumerate(cells):
            m_patch[i].append(run_cells_resumed(recipient, rec_ids, clean, prefix, donor_acts, job_cells, metric, ref,
                                                max_rows) if reuse_prefix else
                              run_cells(recipient, rec_ids, clean, donor_acts, job_cells, metric, ref, max_rows))
            if jobs[i].positions == "each":
                _offset_tokens(clean, offsets[i], seen[i])
    rec, don = torch.cat(m_rec), torch.cat(m_don)  # [n], [n]
    gap = float(don.mean() - rec.mean())
    results = []
    for job, job_sites, offs, job_cells, job_seen, parts in zip(jobs, sites, offsets, cells, seen, m_patch, strict=True):
        ran = torch.cat(parts, dim=1).mean(dim=1)  # [cell run]
        means = torch.full((len(job_sites) * len(offs),), float("nan"))  # every cell; NaN where not run
        at = {(s, o): i for i, (s, o) in enumerate((s, o) for s in job_sites for o in offs)}
        was_run = torch.zeros(len(means), dtype=torch.bool)
        means[[at[c] for c in job_cells]], was_run[[at[c] for c in job_cells]] = ran, True
        recovered = (means - rec.mean()) / gap if gap else torch.full_like(means, float("nan"))
        out = {"kind": job.kind, "positions": job.positions, "metric": metric, "layers": [s.layer for s in job_sites],
               "n": len(chosen), "recipient": float(rec.mean()), "donor": float(don.mean()), "gap": gap,
               "engine": "resumed" if reuse_prefix else "full"}
        if job.positions == "each":
            grid = (len(job_sites), len(offs))
            out.update(offsets=offs, tokens=_token_labels(tokenizer, job_seen), patched=_cells(means.view(grid), was_run.view(grid)),
                       recovered=_cells(recovered.view(grid), was_run.view(grid)))
        else:
            out.update(patched=means.tolist(), recovered=recovered.tolist())
        results.append(out)
    return results


def patch_sweep(pair: ModelPair, prompts: list[Prompt], kind: str = "resid_post", layers: list[int] | None = None,
                positions: str = "all", direction: str = "tuned_into_base", metric: str = "logprob",
                bos: bool = True, batch_size: int = 8, window: int | None = None, max_rows: int = 256,
                reuse_prefix: bool = True) -> dict:
    """Cross-model patching: recovered fraction of the gap per layer (or layer x position) for ``kind``.

    ``positions``: ``all`` (every token of text + target), ``last`` (the last context token, the
    one that predicts the first target token) or ``each`` (a ``[layer][offset]`` grid over the
    ``window`` last context tokens; all of them by default). ``metric``: ``logprob``,
    ``logit_diff``, ``kl`` (to the donor's output) or ``auto``. ``reuse_prefix=False`` runs a
    full forward per cell (``max_rows`` rows each) instead of resuming the recipient's run (the
    result's ``engine`` says which ran). Returns JSON-ready lists.
    """
    return patch_sweeps(pair, prompts, [Job(kind, layers, positions, window)], direction, metric, bos, batch_size,
                        max_rows, reuse_prefix)[0]


def patch_sweeps(pair: ModelPair, prompts: list[Prompt], jobs: list[Job], direction: str = "tuned_into_base",
                 metric: str = "logprob", bos: bool = True, batch_size: int = 8, max_rows: int = 256,
                 reuse_prefix: bool = True) -> list[dict]:
    """``patch_sweep`` of each job (site kind, layers, positions, window), each the same result as alone, from one
    recorded run of each model per batch instead of one per job."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    recipient, donor = (pair.base, pair.tuned) if direction == "tuned_into_base" else (pair.tuned, pair.base)
    out = _sweeps(recipient, donor, pair.tokenizer, prompts, jobs, metric, bos, batch_size, corrupt=False,
                  max_rows=max_rows, reuse_prefix=reuse_prefix)
    return [{"setting": "cross_model", "direction": direction, **r} for r in out]


def within_sweep(pair: ModelPair, prompts: list[Prompt], side: str = "base", kind: str = "resid_post",
                 layers: list[int] | None = None, positions: str = "each", metric: str = "auto",
                 bos: bool = True, batch_size: int = 8, window: int | None = None, max_rows: int = 256,
                 reuse_prefix: bool = True, cells: list[tuple[int, int]] | None = None) -> dict:
    """Within-model patching in one side of the pair: clean activations into the ``corrupt_text`` run.

    ``recovered = (M(corrupt + clean patch) - M(corrupt)) / (M(clean) - M(corrupt))``, scored on
    the clean ``target`` (``auto``: logit difference to the ``foil`` where prompts have one). Clean
    and corrupted prompts must tokenize to the same length. Same cells and output as ``patch_sweep``;
    ``cells`` (``positions="each"``): the ``(layer, offset)`` cells to patch, the others None (``Job.cells``).
    """
    if side not in ("base", "tuned"):
        raise ValueError(f"side must be 'base' or 'tuned', got {side!r}")
    model = pair.base if side == "base" else pair.tuned
    out = _sweeps(model, model, pair.tokenizer, prompts, [Job(kind, layers, positions, window, cells)], metric, bos,
                  batch_size, corrupt=True, max_rows=max_rows, reuse_prefix=reuse_prefix)[0]
    return {"setting": "within_model", "side": side, **out}
