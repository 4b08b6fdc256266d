"""Grafts that cost what they change: a recipient whose layers ``>= k`` are grafted starts at block ``k``.

Grafting the window ``k..k+w-1`` into a model leaves every block below ``k`` as it was, so the
residual stream entering block ``k`` is the recipient's own, recorded once (``models.resume``). A
``ResumedScorer`` records each batch of prompts once per recipient (the inputs of every block), and
``scores(k)`` runs only blocks ``k..L-1`` (then the final norm and unembedding) from the recorded
residual, and unembeds only the scored positions: a sweep over windows computes about half the
blocks a full forward per graft would. Rows of similar length run together, each cut after its last
scored position (``metrics.in_length_groups``), so a batch of short and long prompts pads less. The
numbers equal the full forwards' (``resumes_exactly`` is checked on the first batch; a family whose
forward will not resume falls back to full forwards).
"""

from __future__ import annotations

import logging

import torch
from jaxtyping import Float

from alignloc.causal.metrics import (
    ScoredBatch,
    in_length_groups,
    score,
    scored_batch,
    scored_logits,
)
from alignloc.models.hooks import record, unembed_at
from alignloc.models.pair import LoadedModel
from alignloc.models.resume import Prefix, record_prefix, resume, resumes_exactly, window
from alignloc.prompts import Prompt
from alignloc.sites import Site

log = logging.getLogger(__name__)


class ResumedScorer:
    """Per-prompt target log-probs of one recipient, resumed at any block from its recorded run."""

    def __init__(self, lm: LoadedModel, prompts: list[Prompt], bos: bool, batch_size: int = 16):
        chosen = [p for p in prompts if p.target]
        self.lm = lm
        self.parts: list[ScoredBatch] = [scored_batch(lm.tokenizer, chosen[s : s + batch_size], bos, lm.max_len)
                                         for s in range(0, len(chosen), batch_size)]
        n = lm.model.config.num_hidden_layers
        self.n_layers = n
        with torch.no_grad():
            self.prefixes: list[Prefix] = [record_prefix(lm.model, lm.family, b.ids, b.mask, list(range(n)))
                                           for b in self.parts]
        self.exact = self._check()
        for prefix in self.prefixes:  # the full logits were for the check only: [b, pos, d_vocab] per batch is large
            prefix.logits = None

    def _check(self) -> bool:
        if not self.parts:
            return True
        b, p = self.parts[0], self.prefixes[0]
        dtype = next(self.lm.model.parameters()).dtype
        rtol = 1e-4 if dtype == torch.float32 else 2e-2
        try:
            with torch.no_grad():
                return resumes_exactly(self.lm.model, self.lm.family, p, b.ids, self.n_layers // 2, 0, rtol)
        except (TypeError, ValueError, RuntimeError, AttributeError) as e:
            log.warning("grafting: %s cannot resume a recorded forward (%s: %s); full forwards", self.lm.ref,
                        type(e).__name__, e)
            return False

    @torch.no_grad()
    def logits(self, part: int, start: int = 0, hidden: torch.Tensor | None = None,
               keep: dict[int, torch.Tensor] | None = None) -> Float[torch.Tensor, "b k d_vocab"]:
        """``scored_logits`` of batch ``part`` under the recipient as it is now (grafted at blocks ``>= start``
        at most), computing blocks ``start..L-1`` only (all of them from block 0, or if resuming is not exact).

        ``hidden``: the residual entering block ``start`` (``[b, pos, d_model]``) where it is not the recorded
        run's: that of another graft that equals this one below ``start`` (as ``keep`` returns it). ``keep``: a
        dict that gets the residual entering every block after ``start`` (columns past a row's last scored
        position are not computed). ``start=0`` is a full forward (the embedding's too) unless ``hidden`` or
        ``keep`` is given: then the forward enters block 0, the embedding being the recipient's own."""
        b, prefix = self.parts[part], self.prefixes[part]
        if not self.exact or (start == 0 and hidden is None and keep is None):  # block 0 too: the embedding may be grafted
            return scored_logits(self.lm, b, grouped=True)
        entering = prefix.resid[start] if hidden is None else hidden
        after = list(range(start + 1, self.n_layers)) if keep is not None else []
        if keep is not None:
            keep.update({layer: torch.empty_like(entering) for layer in after})

        def run(rows: torch.Tensor, width: int) -> torch.Tensor:
            starts = torch.zeros_like(rows)
            sites = [Site(layer, "resid_pre") for layer in after]
            with record(self.lm.model, self.lm.family, sites) as acts, \
                    unembed_at(self.lm.model, self.lm.family, b.index[rows]):  # the scored positions only
                out = resume(self.lm.model, self.lm.family, prefix, start, rows, starts,
                             window(entering[rows.to(entering.device)], starts, width), b.ids).float().cpu()
            for site in sites:
                keep[site.layer][rows.to(entering.device), :width] = acts[site]
            return out

        return in_length_groups(b.row_end, run)  # rows of similar length together: less padding, the same values

    @torch.no_grad()
    def scores(self, start: int = 0, metric: str = "logprob", parts: list[ScoredBatch] | None = None
               ) -> Float[torch.Tensor, " n"]:
        """Each prompt's ``metric`` (``causal.metrics.score``) under the recipient as it is now (grafted at blocks
        ``>= start`` at most), computing blocks ``start..L-1`` only. ``parts``: the same batches with other
        foils (``dataclasses.replace`` of ``self.parts``), for ``logit_diff``."""
        parts = self.parts if parts is None else parts
        if [b.ids.shape for b in parts] != [b.ids.shape for b in self.parts]:
            raise ValueError("parts: the scorer's own batches (with other foils at most)")
        return torch.cat([score(self.logits(i, start), b, metric).float() for i, b in enumerate(parts)])

    def mean(self, start: int = 0) -> float:
        """The mean over prompts (as ``graft.target_metric``)."""
        return float(self.scores(start).nanmean())


class Chain:
    """Successive grafts of one recipient, each adding layers to the previous one (nested sets, or windows of one
    start growing): a graft equals the previous one below the first layer it adds, so its forward enters there with
    the previous graft's residual (kept per batch) and computes the blocks from there on only."""

    def __init__(self, scorer: ResumedScorer):
        self.scorer = scorer
        self.kept: list[dict[int, torch.Tensor]] = [{} for _ in scorer.parts]  # the last graft's residuals, per batch

    def logits(self, part: int, new: int) -> Float[torch.Tensor, "b k d_vocab"]:
        """Batch ``part``'s scored logits under the recipient as it is now: the last graft plus layers from ``new``
        up (the recipient's own run below its lowest grafted layer, where nothing is kept)."""
        prev = self.kept[part]
        hidden = prev.get(new)
        keep = {layer: v for layer, v in prev.items() if layer < new}
        out = self.scorer.logits(part, new, hidden, keep)
        if hidden is not None:
            keep[new] = hidden
        self.kept[part] = keep
        return out

    def scores(self, new: int, metric: str = "logprob", parts: list[ScoredBatch] | None = None) -> Float[torch.Tensor, " n"]:
        """Each prompt's ``metric`` (as ``ResumedScorer.scores``) under the recipient as it is now."""
        parts = self.scorer.parts if parts is None else parts
        return torch.cat([score(self.logits(i, new), b, metric).float() for i, b in enumerate(parts)])

