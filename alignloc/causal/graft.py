"""Weight grafting: move one layer's (or module's) weights between the two models of a pair.

- *sufficiency*: the base with layer ``L`` taken from the tuned model: how much of the tuned
  model's metric gap does that one layer bring?  ``(M(base+L) - M(base)) / (M(tuned) - M(base))``
- *necessity*: the tuned model with layer ``L`` reverted to the base: how much of the gap is lost?
  ``(M(tuned) - M(tuned-L)) / (M(tuned) - M(base))``

``grafted`` swaps parameters in place and always restores them (on error too), so a sweep needs
no model copies. Weights are copied raw, never folded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from alignloc.analyses.weights import module_of
from alignloc.models.pair import LoadedModel, ModelPair

Metric = Callable[[LoadedModel], float]


def graft_params(model: LoadedModel, layers: list[int], modules: tuple[str, ...] | None = None) -> list[str]:
    """Parameter names of ``layers`` (restricted to ``modules`` such as ``("mlp",)`` if given)."""
    names = []
    for name, _ in model.model.named_parameters():
        layer, module = module_of(name, model.family)
        if layer in layers and (modules is None or module in modules):
            names.append(name)
    if not names:
        raise ValueError(f"no parameters in layers {layers} (modules {modules}) of {model.ref}")
    return names


@contextmanager
def grafted(recipient: LoadedModel, donor: LoadedModel, layers: list[int],
            modules: tuple[str, ...] | None = None) -> Iterator[LoadedModel]:
    """``recipient`` with the weights of ``layers`` (and ``modules``) copied from ``donor``; restored on exit."""
    names = graft_params(recipient, layers, modules)
    params, donor_params = dict(recipient.model.named_parameters()), dict(donor.model.named_parameters())
    saved = {n: params[n].detach().clone() for n in names}
    try:
        with torch.no_grad():
            for n in names:
                params[n].copy_(donor_params[n])
        yield recipient
    finally:
        with torch.no_grad():
            for n in names:
                params[n].copy_(saved[n])


def graft_sweep(pair: ModelPair, metric: Metric, layers: list[int] | None = None,
                modules: tuple[str, ...] | None = None) -> dict:
    """Sufficiency and necessity of each layer for the gap ``metric(tuned) - metric(base)``.

    Returns JSON-ready ``{"base", "tuned", "gap", "layers", "sufficiency": [...], "necessity": [...]}``
    (fractions of the gap; NaN when the gap is 0).
    """
    layers = list(range(pair.n_layers)) if layers is None else layers
    m_base, m_tuned = metric(pair.base), metric(pair.tuned)
    gap = m_tuned - m_base
    suff, nec = [], []
    for layer in layers:
        with grafted(pair.base, pair.tuned, [layer], modules) as m:
            up = metric(m)
        with grafted(pair.tuned, pair.base, [layer], modules) as m:
            down = metric(m)
        suff.append((up - m_base) / gap if gap else float("nan"))
        nec.append((m_tuned - down) / gap if gap else float("nan"))
    return {"base": m_base, "tuned": m_tuned, "gap": gap, "layers": layers, "modules": list(modules or []),
            "sufficiency": suff, "necessity": nec}


def target_metric(prompts: list, kind: str | None, bos: bool) -> Metric | None:
    """Mean teacher-forced log-prob of the targets of ``kind`` prompts (every kind if None; None if there are none)."""
    from alignloc.analyses.outputs import target_logprobs

    chosen = [p for p in prompts if (kind is None or p.kind == kind) and p.target]
    if not chosen:
        return None
    return lambda m: float(target_logprobs(m, chosen, bos=bos).nanmean())


def graft_report(pair: ModelPair, prompts: list, bos: bool) -> dict:
    """Per-layer grafting sufficiency/necessity for the behavior and knowledge metrics."""
    out = {}
    for kind in ("behavior", "knowledge"):
        metric = target_metric(prompts, kind, bos)
        if metric is not None:
            out[kind] = graft_sweep(pair, metric)
    return out
