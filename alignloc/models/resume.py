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


def _prefix_cache(prefix: Prefix, start: int):
    """A ``DynamicCache`` holding the recorded K/V of positions ``< start`` (views, no copies)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache()
    for k, v in zip(prefix.keys, prefix.values, strict=True):
        layer = DynamicLayer()
        layer.lazy_initialization(k, v)
        layer.keys, layer.values = k[:, :, :start], v[:, :, :start]
        cache.layers.append(layer)
    return cache


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


def resume(model: torch.nn.Module, family: Family, prefix: Prefix, layer: int, start: int, end: int,
           hidden: Float[torch.Tensor, "b new d_model"], ids: Int[torch.Tensor, "b pos"]
           ) -> Float[torch.Tensor, "b new d_vocab"]:
    """Logits at positions ``start..end-1`` of a forward entering block ``layer`` with ``hidden``.

    ``hidden`` is the residual at positions ``start..end-1``; positions before ``start`` are the
    recorded run's (its K/V). Hooks that the caller holds on blocks ``>= layer`` fire as usual
    (on ``[b, end - start, d_model]`` activations).
    """
    cache = _prefix_cache(prefix, start) if start > 0 else None
    with entering(model, family, layer, hidden):
        return model(input_ids=ids[:, start:end], attention_mask=prefix.mask[:, :end], cache=cache,
                     use_cache=cache is not None).logits


def resumes_exactly(model: torch.nn.Module, family: Family, prefix: Prefix, ids: Int[torch.Tensor, "b pos"],
                    layer: int, start: int, rtol: float) -> bool:
    """True when resuming the unpatched run at (``layer``, ``start``) gives its logits back (to ``rtol``)."""
    end = ids.shape[1]
    hidden = prefix.resid[layer][:, start:end]
    got = resume(model, family, prefix, layer, start, end, hidden, ids).float()
    ref = prefix.logits[:, start:end].float()
    real = prefix.mask[:, start:end].bool()  # padded positions need not agree
    return bool(((got - ref).abs()[real] <= rtol * (1 + ref.abs().max())).all())
