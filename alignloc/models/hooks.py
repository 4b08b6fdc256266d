"""Scoped forward hooks on plain HF modules: record, edit, stop early. Always removed on exit.

``with record(model, family, sites) as acts: model(...)`` fills ``acts[site]`` with
``[batch, pos, d_model]`` tensors. ``with edit(model, family, site, fn): ...`` replaces the
activation at ``site`` by ``fn(act)``. Hooks are removed when the block exits, on error too.
``logits_at(model, family, ids, mask, index)`` runs the unembedding only at the positions a metric
reads (real vocabularies of 128k-262k make the full ``[batch, pos, d_vocab]`` the largest tensor).

On a model sharded by a device map, a replacement is moved to the device (and dtype) of the
activation it replaces, so a hook may compute it anywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import torch
from jaxtyping import Float, Int

from alignloc.models.families import Family, block_module, get_module, site_module
from alignloc.models.placement import input_device
from alignloc.sites import Site

ActFn = Callable[[torch.Tensor], torch.Tensor]


class StopForward(Exception):
    """Raised by a hook to end a forward pass once every requested site has been seen."""


def _first(x):
    return x[0] if isinstance(x, (tuple, list)) else x


def _replace_first(x, new):
    if isinstance(x, tuple):
        return (new, *x[1:])
    if isinstance(x, list):
        return [new, *x[1:]]
    return new


def _like(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """``new`` on ``old``'s device and in its dtype (a no-op when they already match)."""
    return new.to(device=old.device, dtype=old.dtype)


def _input_of(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


@contextmanager
def hook_site(module: torch.nn.Module, io: str, fn: Callable) -> Iterator[None]:
    """Attach ``fn(act) -> act | None`` to a module's input ("in") or output ("out") for the block.

    Returning a tensor replaces the activation; returning None leaves it unchanged.
    """
    if io == "out":

        def out_hook(mod, args, output):
            old = _first(output)
            new = fn(old)
            return None if new is None else _replace_first(output, _like(new, old))

        handle = module.register_forward_hook(out_hook)
    else:

        def in_hook(mod, args, kwargs):
            old = _input_of(args, kwargs)
            new = fn(old)
            if new is None:
                return None
            new = _like(new, old)
            if args:
                return (new, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": new}

        handle = module.register_forward_pre_hook(in_hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def stop_after(model: torch.nn.Module, family: Family, sites: list[Site]) -> Iterator[None]:
    """End the forward pass (raise StopForward) right after the last of ``sites`` is computed."""
    last = max(sites, key=lambda s: s.order)
    block = block_module(model, family, last.layer)
    only_pre = all(s.kind == "resid_pre" for s in sites if s.layer == last.layer)

    def stop(*_args, **_kwargs):
        raise StopForward

    handle = (
        block.register_forward_pre_hook(stop)
        if only_pre
        else block.register_forward_hook(stop)
    )
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def record(
    model: torch.nn.Module, family: Family, sites: list[Site], stop: bool = False
) -> Iterator[dict[Site, torch.Tensor]]:
    """Record ``[batch, pos, d_model]`` activations at ``sites`` into the yielded dict.

    With ``stop=True`` the forward ends after the last site (catch StopForward, or use
    :func:`run_recording`), so later layers and the unembedding are skipped.
    """
    acts: dict[Site, torch.Tensor] = {}
    with ExitStack() as stack:
        for site in sites:
            mod, io = site_module(model, family, site)

            def grab(act, site=site):
                acts[site] = act.detach()

            stack.enter_context(hook_site(mod, io, grab))
        if stop:
            # Registered after the site hooks, so on the same module it fires last.
            stack.enter_context(stop_after(model, family, sites))
        yield acts


def run_recording(
    model: torch.nn.Module,
    family: Family,
    sites: list[Site],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    stop: bool = True,
) -> dict[Site, torch.Tensor]:
    """One forward pass that returns ``{site: [batch, pos, d_model]}``, stopping early if asked."""
    with record(model, family, sites, stop=stop) as acts:
        try:
            model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        except StopForward:
            pass
    return dict(acts)


@contextmanager
def edit(model: torch.nn.Module, family: Family, site: Site, fn: ActFn) -> Iterator[None]:
    """Replace the activation at ``site`` by ``fn(act)`` (``[batch, pos, d_model]``) in the block."""
    mod, io = site_module(model, family, site)
    with hook_site(mod, io, fn):
        yield


def count_hooks(model: torch.nn.Module) -> int:
    """Number of forward (pre-)hooks attached anywhere in ``model`` (unchanged after a scope exits)."""
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()
    )


@contextmanager
def unembed_at(model: torch.nn.Module, family: Family, index: Int[torch.Tensor, "batch k"]) -> Iterator[None]:
    """Within the block the unembedding reads only positions ``index [batch, k]`` of each row, so
    the model's logits come out ``[batch, k, d_vocab]`` (any head post-processing, e.g. soft-capping,
    still applies: it is elementwise). A column that repeats the one before it (``scored_index``
    pads rows so) is not unembedded again but copied: real vocabularies make each column costly."""
    head = get_module(model, family.unembed)
    keep = torch.ones_like(index, dtype=torch.bool)
    keep[:, 1:] = index[:, 1:] != index[:, :-1]
    src = keep.view(-1).cumsum(0) - 1  # [batch * k]: the unembedded column each one copies

    def take(h: torch.Tensor) -> torch.Tensor:  # [batch, pos, d_model] -> [1, n kept, d_model]
        return torch.take_along_dim(h, index.to(h.device)[..., None], dim=1)[keep.to(h.device)][None]

    def spread(logits: torch.Tensor) -> torch.Tensor:  # [1, n kept, d_vocab] -> [batch, k, d_vocab]
        return logits[0, src.to(logits.device)].view(*index.shape, logits.shape[-1])

    with hook_site(head, "in", take), hook_site(head, "out", spread):
        yield


def logits_at(model: torch.nn.Module, family: Family, input_ids: Int[torch.Tensor, "batch pos"],
              attention_mask: Int[torch.Tensor, "batch pos"], index: Int[torch.Tensor, "batch k"],
              forward: Callable | None = None) -> Float[torch.Tensor, "batch k d_vocab"]:
    """Float logits ``[batch, k, d_vocab]`` (on the CPU) at positions ``index [batch, k]``: the one way
    alignloc scores a model. ``forward`` replaces ``model(...)`` (e.g. a ``functional_call``)."""
    dev = input_device(model)
    with unembed_at(model, family, index):
        out = (forward or model)(input_ids=input_ids.to(dev), attention_mask=attention_mask.to(dev), use_cache=False)
    return out.logits.float().cpu()
