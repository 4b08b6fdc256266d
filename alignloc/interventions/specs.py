"""Interventions as small specs that become scoped hooks: steer, ablate, patch from another run, scale.

Each spec is a frozen dataclass with

- ``spec.on(model)``: a context manager that installs the intervention on a loaded HF model
  (alignloc's hook table, so it composes with ``capture`` and the patching sweeps, which use the
  same hooks) and removes it on exit, on error too;
- ``spec.tl_hooks(bridge)``: the same intervention as ``[(hook_name, fn)]`` for a TransformerLens
  ``TransformerBridge`` (``bridge.run_with_hooks(..., fwd_hooks=...)``).

``apply(model, specs)`` installs several at once (in order). ``where`` selects positions: ``None``
for all, or a bool mask ``[batch, pos]`` of the batch the model will run on.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch

from alignloc.interventions.directions import project_out
from alignloc.models.families import block_module, get_module
from alignloc.models.hooks import edit, hook_site
from alignloc.models.pair import LoadedModel
from alignloc.sites import Site


def _masked(act: torch.Tensor, new: torch.Tensor, where: torch.Tensor | None) -> torch.Tensor:
    """``new`` where ``where`` is True (everywhere if None), ``act`` elsewhere."""
    if where is None:
        return new
    if where.shape != act.shape[:2]:
        raise ValueError(f"position mask has shape {tuple(where.shape)}, the activation {tuple(act.shape[:2])}")
    return torch.where(where[..., None].to(act.device), new, act)


def _tl_name(site: Site) -> str:
    from alignloc.models.backends.bridge import hook_name

    return hook_name(site)


@dataclass(frozen=True)
class Steer:
    """Activation addition: ``act + alpha * vector`` at ``site`` (positions ``where``)."""

    site: Site
    vector: torch.Tensor  # [d_model]
    alpha: float = 1.0
    where: torch.Tensor | None = None

    def fn(self, act: torch.Tensor) -> torch.Tensor:
        """The edit applied to one activation ``[b, pos, d]``."""
        return _masked(act, act + self.alpha * self.vector.to(act.dtype), self.where)

    def on(self, model: LoadedModel):
        """Installed on ``model`` for the ``with`` block."""
        return edit(model.model, model.family, self.site, self.fn)

    def tl_hooks(self, bridge) -> list:
        """``[(hook_name, fn)]`` for a TransformerBridge."""
        return [(_tl_name(self.site), lambda act, hook: self.fn(act))]


@dataclass(frozen=True)
class Ablate:
    """Directional ablation: no component along ``direction`` in the residual stream from ``layers[0]`` on.

    Projects the direction out of the residual entering the first chosen layer and out of every
    chosen layer's attention and MLP writes, so with ``layers=None`` (all) every residual-stream
    activation has zero projection on it. ``orthogonalized`` is the equivalent weight edit.
    """

    direction: torch.Tensor  # [d_model]
    layers: tuple[int, ...] | None = None

    def sites(self, n_layers: int) -> list[Site]:
        """The sites whose activations are projected."""
        layers = sorted(self.layers) if self.layers is not None else list(range(n_layers))
        return [Site(layers[0], "resid_pre")] + [Site(layer, k) for layer in layers for k in ("attn_out", "mlp_out")]

    def fn(self, act: torch.Tensor) -> torch.Tensor:
        """The edit applied to one activation."""
        return project_out(act, self.direction)

    @contextmanager
    def on(self, model: LoadedModel) -> Iterator[None]:
        """Installed on ``model`` for the ``with`` block."""
        with ExitStack() as stack:
            for site in self.sites(model.config.num_hidden_layers):
                stack.enter_context(edit(model.model, model.family, site, self.fn))
            yield

    def tl_hooks(self, bridge) -> list:
        """``[(hook_name, fn)]`` for a TransformerBridge."""
        return [(_tl_name(s), lambda act, hook: self.fn(act)) for s in self.sites(bridge.cfg.n_layers)]


@dataclass(frozen=True)
class PatchFrom:
    """Replace ``site`` at positions ``where`` with ``source`` (``[b, pos, d]``, from another run or model)."""

    site: Site
    source: torch.Tensor
    where: torch.Tensor | None = None

    def fn(self, act: torch.Tensor) -> torch.Tensor:
        """The edit applied to one activation."""
        if self.source.shape != act.shape:
            raise ValueError(f"patch source has shape {tuple(self.source.shape)}, the activation at {self.site} "
                             f"{tuple(act.shape)}: run the source on tokens of the same shape")
        return _masked(act, self.source.to(act.dtype), self.where)

    def on(self, model: LoadedModel):
        """Installed on ``model`` for the ``with`` block."""
        return edit(model.model, model.family, self.site, self.fn)

    def tl_hooks(self, bridge) -> list:
        """``[(hook_name, fn)]`` for a TransformerBridge."""
        return [(_tl_name(self.site), lambda act, hook: self.fn(act))]


@dataclass(frozen=True)
class Scale:
    """Multiply a component's output by ``factor``: the MLP, the whole attention, or one ``head``."""

    layer: int
    component: str  # "mlp" | "attn"
    factor: float
    head: int | None = None
    where: torch.Tensor | None = None

    def __post_init__(self):
        if self.component not in ("mlp", "attn"):
            raise ValueError(f"component must be 'mlp' or 'attn', got {self.component!r}")
        if self.head is not None and self.component != "attn":
            raise ValueError("a head index needs component='attn'")

    def fn(self, act: torch.Tensor) -> torch.Tensor:
        """The edit applied to one activation (the sublayer output)."""
        return _masked(act, act * self.factor, self.where)

    def on(self, model: LoadedModel):
        """Installed on ``model`` for the ``with`` block."""
        if self.head is None:
            kind = "mlp_out" if self.component == "mlp" else "attn_out"
            return edit(model.model, model.family, Site(self.layer, kind), self.fn)
        cfg = model.config
        d_head = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        if not 0 <= self.head < cfg.num_attention_heads:
            raise ValueError(f"head {self.head} is out of range: the model has {cfg.num_attention_heads} heads")
        attn = get_module(block_module(model.model, model.family, self.layer), model.family.attn)
        proj = get_module(attn, model.family.attn_proj)
        cols = slice(self.head * d_head, (self.head + 1) * d_head)

        def scale_head(z: torch.Tensor) -> torch.Tensor:  # the heads' concatenated outputs, before the projection
            new = z.clone()
            new[..., cols] = z[..., cols] * self.factor
            return _masked(z, new, self.where)

        return hook_site(proj, "in", scale_head)

    def tl_hooks(self, bridge) -> list:
        """``[(hook_name, fn)]`` for a TransformerBridge (whole components only)."""
        if self.head is not None:
            raise NotImplementedError("per-head scaling is implemented for the HF backend (Scale.on)")
        kind = "mlp_out" if self.component == "mlp" else "attn_out"
        return [(_tl_name(Site(self.layer, kind)), lambda act, hook: self.fn(act))]


Intervention = Steer | Ablate | PatchFrom | Scale


@contextmanager
def apply(model: LoadedModel, specs: Sequence[Intervention]) -> Iterator[LoadedModel]:
    """Install every spec on ``model`` for the ``with`` block (all removed on exit, on error too)."""
    with ExitStack() as stack:
        for spec in specs:
            stack.enter_context(spec.on(model))
        yield model
