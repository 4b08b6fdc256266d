"""Resume a forward pass at block L and position s from a recorded run: a sweep costs what it changes.

A patch at (layer L, position p) leaves every block below L and every position before p as they
were in the unpatched run. So a patched forward can *enter* block L with the recorded residual
stream (``[b, pos - s, d_model]``, positions ``s..``) and the recorded keys/values of positions
``< s`` as a KV cache, and compute only blocks ``L..n-1`` (then the final norm and unembedding)
on positions ``s..end-1``.

The model's own Hugging Face forward does the work, so each family's position ids, rotary
embeddings, masks (sliding windows included), final norm and logit soft-capping stay its own:

- blocks below L are swapped for :class:`PassThrough` for the duration of a ``with`` block
  (restored on exit, on error too);
- a forward pre-hook on block L (or on the final norm, to enter after the last block) replaces
  its input by the residual to enter with;
- ``cache`` is a ``DynamicCache`` holding the first ``s`` positions of each layer's recorded K/V,
  so position ids start at ``s`` and the queries attend to the recorded prefix.

:func:`record_prefix` is the recipient's one full forward that records all of this;
:func:`resumes_exactly` checks on a model that a resumed forward reproduces the full one (an
architecture whose blocks keep other state across layers would fail it: callers fall back to
full forwards then).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int

from alignloc.models.families import Family, block_module, get_module
from alignloc.models.hooks import hook_site, record
from alignloc.sites import Site


class PassThrough(torch.nn.Module):
    """Stands in for a decoder block that a resumed forward skips: returns its input residual."""

    def __init__(self, block: torch.nn.Module):
        super().__init__()
        self.attention_type = getattr(block, "attention_type", None)  # read by some families' loops

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


@dataclass
class Prefix:
    """What a recipient's full forward leaves for resumed forwards of the same tokens."""

    logits: Float[torch.Tensor, "b pos d_vocab"]
    resid: dict[int, Float[torch.Tensor, "b pos d_model"]]  # input of block k; k = n_layers: of the final norm
    keys: list[torch.Tensor]  # per layer [b, kv_heads, pos, head_dim]
    values: list[torch.Tensor]
    mask: Int[torch.Tensor, "b pos"]
    acts: dict[Site, Float[torch.Tensor, "b pos d_model"]]  # other sites recorded on the way


def entry_site(layer: int, n_layers: int) -> Site:
    """The site whose value is block ``layer``'s input (the last block's output for the final norm's)."""
    return Site(layer, "resid_pre") if layer < n_layers else Site(n_layers - 1, "resid_post")


def record_prefix(model: torch.nn.Module, family: Family, ids: Int[torch.Tensor, "b pos"],
                  mask: Int[torch.Tensor, "b pos"], enter: list[int], also: list[Site] = ()) -> Prefix:
    """One full forward that returns its logits, the inputs of blocks ``enter``, every layer's K/V
    and the activations at the sites ``also``."""
    from transformers import DynamicCache

    n = model.config.num_hidden_layers
    sites = {k: entry_site(k, n) for k in sorted(set(enter))}
    cache = DynamicCache()  # no config: full (not sliding-window-truncated) K/V in every layer
    with record(model, family, sorted({*sites.values(), *also}, key=lambda s: s.order)) as acts:
        logits = model(input_ids=ids, attention_mask=mask, cache=cache, use_cache=True).logits
    keys = [layer.keys for layer in cache.layers]
    values = [layer.values for layer in cache.layers]
    return Prefix(logits, {k: acts[s] for k, s in sites.items()}, keys, values, mask, {s: acts[s] for s in also})


def window(t: torch.Tensor, starts: Int[torch.Tensor, " b"], length: int) -> torch.Tensor:
    """Row ``r``'s positions ``starts[r] .. starts[r] + length - 1`` of ``t [b, pos, ...]`` (past the
    end: the last position, as padding): ``[b, length, ...]``."""
    at = (starts[:, None] + torch.arange(length)).clamp(max=t.shape[1] - 1).to(t.device)
    return torch.take_along_dim(t, at.view(*at.shape, *[1] * (t.dim() - 2)), dim=1)


def _prefix_cache(prefix: Prefix, rows: Int[torch.Tensor, " m"], starts: Int[torch.Tensor, " m"], layer: int):
    """``(cache, cache mask [m, S])``: a ``DynamicCache`` whose item ``i`` holds the recorded K/V of
    row ``rows[i]`` at positions ``< starts[i]``, right-aligned in ``S = max(starts)`` slots (masked
    slots on the left, as in left-padded generation). The recorded batch itself at one start: views.
    Layers below ``layer`` (skipped by the resumed forward) get zero views of the right shape only."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    s = int(starts.max())
    pos = torch.arange(s)[None, :] - (s - starts[:, None])  # [m, S]: the position each slot holds
    plain = bool((starts == s).all()) and torch.equal(rows, torch.arange(prefix.mask.shape[0]))
    at = pos.clamp(min=0).to(prefix.mask.device)
    mask = prefix.mask[:, :s] if plain else prefix.mask[rows.to(at.device)[:, None], at] * (pos >= 0).to(at.device)
    cache = DynamicCache()
    for i, (k, v) in enumerate(zip(prefix.keys, prefix.values, strict=True)):
        kv = DynamicLayer()
        kv.lazy_initialization(k, v)
        if plain:
            kv.keys, kv.values = k[:, :, :s], v[:, :, :s]
        elif i < layer:  # never read
            kv.keys = k.new_zeros(()).expand(len(rows), k.shape[1], s, k.shape[3])
            kv.values = v.new_zeros(()).expand(len(rows), v.shape[1], s, v.shape[3])
        else:  # [m, kv_heads, S, head_dim]: row rows[i], slots at[i]
            r, h, a = rows.to(k.device)[:, None, None], torch.arange(k.shape[1], device=k.device)[None, :, None], at.to(k.device)[:, None, :]
            kv.keys, kv.values = k[r, h, a], v[r, h, a]
        cache.layers.append(kv)
    return cache, mask


@contextmanager
def entering(model: torch.nn.Module, family: Family, layer: int,
             hidden: Float[torch.Tensor, "b new d_model"]) -> Iterator[None]:
    """Within the block, a forward skips blocks ``< layer`` and enters block ``layer`` with ``hidden``."""
    blocks = get_module(model, family.layers)
    n = len(blocks)
    target = block_module(model, family, layer) if layer < n else get_module(model, family.final_norm)
    originals = [blocks[i] for i in range(layer)]
    with ExitStack() as stack:
        for i, block in enumerate(originals):
            blocks[i] = PassThrough(block)
        stack.callback(lambda: [blocks.__setitem__(i, b) for i, b in enumerate(originals)])
        stack.enter_context(hook_site(target, "in", lambda _act: hidden))
        yield


def resume(model: torch.nn.Module, family: Family, prefix: Prefix, layer: int, rows: Int[torch.Tensor, " m"],
           starts: Int[torch.Tensor, " m"], hidden: Float[torch.Tensor, "m new d_model"],
           ids: Int[torch.Tensor, "b pos"]) -> Float[torch.Tensor, "m _scored d_vocab"]:
    """Logits of ``m`` resumed forwards (``[m, new, d_vocab]``, or at the scored positions only inside
    ``hooks.unembed_at``): item ``i`` continues row ``rows[i]`` of the recorded run at
    its positions ``starts[i] .. starts[i] + new - 1``, entering block ``layer`` with ``hidden[i]``
    (the residual there: ``window(resid[rows], starts, new)``, or a patched version of it).

    Positions before ``starts[i]`` are the recorded run's (its K/V). Items that start at different
    positions are aligned on their start (``_prefix_cache``), each keeping its own position ids;
    positions past a row's end are padding. A row may appear in several items (patched variants
    of one prompt sharing a forward). Hooks that the caller holds on blocks ``>= layer`` fire as
    usual (on ``[m, new, d_model]`` activations).
    """
    new, n_pos = hidden.shape[1], ids.shape[1]
    pos = starts[:, None] + torch.arange(new)  # [m, new]
    real = window(prefix.mask[rows.to(prefix.mask.device)], starts, new) * (pos < n_pos).to(prefix.mask.device)
    pos = pos.clamp(max=n_pos - 1)  # padding keeps a valid position id (learned position tables)
    if int(starts.max()) == 0:
        cache, mask = None, real
    else:
        cache, past = _prefix_cache(prefix, rows, starts, layer)
        mask = torch.cat([past, real], 1)
    with entering(model, family, layer, hidden):
        return model(input_ids=window(ids[rows.to(ids.device)], starts, new), attention_mask=mask,
                     position_ids=pos.to(ids.device), cache=cache, use_cache=cache is not None).logits


def resumes_exactly(model: torch.nn.Module, family: Family, prefix: Prefix, ids: Int[torch.Tensor, "b pos"],
                    layer: int, starts: int | Int[torch.Tensor, " b"], rtol: float) -> bool:
    """True when resuming the unpatched run at block ``layer`` and position ``starts`` (one for all
    rows, or one per row) gives its logits back (to ``rtol``)."""
    rows = torch.arange(ids.shape[0])
    starts = torch.full_like(rows, starts) if isinstance(starts, int) else starts
    new = ids.shape[1] - int(starts.min())
    got = resume(model, family, prefix, layer, rows, starts, window(prefix.resid[layer], starts, new), ids).float()
    ref = window(prefix.logits, starts, new).float()
    pos = starts[:, None] + torch.arange(new)
    real = (window(prefix.mask, starts, new) * (pos < ids.shape[1])).bool()  # padded positions need not agree
    return bool(((got - ref).abs()[real] <= rtol * (1 + ref.abs().max())).all())
