"""Weight grafting: move a set of layers' (or modules') weights between the two models of a pair.

- *sufficiency*: the base with layers ``S`` taken from the tuned model: how much of the tuned
  model's metric gap do they bring?  ``(M(base+S) - M(base)) / (M(tuned) - M(base))``
- *necessity*: the tuned model with ``S`` reverted to the base: how much of the gap is lost?
  ``(M(tuned) - M(tuned-S)) / (M(tuned) - M(base))``

``graft_sweep`` does this per layer; ``window_sweep`` for every contiguous window ``i..i+w-1`` of
each size ``w`` asked for, the functional localization that still works when a fine-tune moved
every weight (``carrier_window``: the smallest window that is both sufficient and necessary).
``grafted`` exchanges the two models' parameter storages in place and always swaps them back (on
error too), so a sweep needs no model copy and no extra memory. Weights move raw, never folded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from alignloc.analyses.weights import module_of
from alignloc.causal.resumed import Chain
from alignloc.models.pair import LoadedModel, ModelPair
from alignloc.models.placement import PlacementError
from alignloc.progress import stage

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
def swapped(recipient: LoadedModel, donor: LoadedModel, names: list[str]) -> Iterator[None]:
    """Parameters ``names`` of ``recipient`` hold ``donor``'s values inside the block; restored on exit.

    Where the two parameters share device, dtype and shape their storages are exchanged (no copy,
    no memory: the donor holds the recipient's values until the block exits); otherwise the donor's
    values are copied in and a saved copy of the recipient's is written back.
    """
    params, donor_params = dict(recipient.model.named_parameters()), dict(donor.model.named_parameters())
    offloaded = [n for n in names if params[n].device.type == "meta" or donor_params[n].device.type == "meta"]
    if offloaded:
        raise PlacementError(f"grafting needs resident weights, but {offloaded[0]} is offloaded by the device map "
                             "(load the pair on GPUs/CPU without disk offload to graft)")
    exchanged, saved = [], {}
    try:
        with torch.no_grad():
            for n in names:
                a, b = params[n], donor_params[n]
                if (a.device, a.dtype, a.shape) == (b.device, b.dtype, b.shape):
                    a.data, b.data = b.data, a.data
                    exchanged.append(n)
                else:
                    saved[n] = a.detach().clone()
                    a.copy_(b)
        yield
    finally:
        with torch.no_grad():
            for n in exchanged:
                params[n].data, donor_params[n].data = donor_params[n].data, params[n].data
            for n, v in saved.items():
                params[n].copy_(v)


@contextmanager
def grafted(recipient: LoadedModel, donor: LoadedModel, layers: list[int],
            modules: tuple[str, ...] | None = None) -> Iterator[LoadedModel]:
    """``recipient`` with the weights of ``layers`` (and ``modules``) taken from ``donor``; restored on exit."""
    with swapped(recipient, donor, graft_params(recipient, layers, modules)):
        yield recipient


def graft_effect(pair: ModelPair, metric: Metric, layers: list[int], m_base: float, m_tuned: float,
                 modules: tuple[str, ...] | None = None, resumed: tuple | None = None) -> tuple[float, float]:
    """``(sufficiency, necessity)`` of the layer set ``layers`` as fractions of the gap (NaN if it is 0).

    ``resumed``: ``(ResumedScorer of the base, of the tuned model)`` on the metric's prompts
    (``causal.resumed``): each grafted model then runs from block ``min(layers)`` only, with the same result."""
    gap = m_tuned - m_base
    up = grafted_metric(pair, metric, 0, layers, modules, resumed)
    down = grafted_metric(pair, metric, 1, layers, modules, resumed)
    return ((up - m_base) / gap, (m_tuned - down) / gap) if gap else (float("nan"), float("nan"))


def grafted_metric(pair: ModelPair, metric: Metric, side: int, layers: list[int], modules: tuple[str, ...] | None = None,
                   resumed: tuple | None = None, chain: Chain | None = None, new: int | None = None) -> float:
    """``metric`` of the base with ``layers`` from the tuned model (``side`` 0) or of the tuned model with them
    reverted (1); ``resumed`` (see ``graft_effect``) runs from ``min(layers)``, ``chain`` from block ``new`` with the
    previous graft of a growing set (``causal.resumed.Chain``)."""
    recipient, donor = (pair.base, pair.tuned) if side == 0 else (pair.tuned, pair.base)
    with grafted(recipient, donor, layers, modules) as m:
        if chain is not None:
            return float(chain.scores(new).nanmean())
        return resumed[side].mean(min(layers)) if resumed else metric(m)


def graft_sweep(pair: ModelPair, metric: Metric, layers: list[int] | None = None,
                modules: tuple[str, ...] | None = None) -> dict:
    """Sufficiency and necessity of each layer for the gap ``metric(tuned) - metric(base)``.

    Returns JSON-ready ``{"base", "tuned", "gap", "layers", "sufficiency": [...], "necessity": [...]}``
    (fractions of the gap; NaN when the gap is 0).
    """
    layers = list(range(pair.n_layers)) if layers is None else layers
    m_base, m_tuned = metric(pair.base), metric(pair.tuned)
    effects = [graft_effect(pair, metric, [layer], m_base, m_tuned, modules) for layer in layers]
    return {"base": m_base, "tuned": m_tuned, "gap": m_tuned - m_base, "layers": layers, "modules": list(modules or []),
            "sufficiency": [e[0] for e in effects], "necessity": [e[1] for e in effects]}


def window_sizes(n_layers: int, spec: str | list[int] | None = None) -> list[int]:
    """Window sizes to sweep: ``spec`` as ``"1,2,4"`` or a list; default 1, 2, then powers of two up
    to half the layers (a window of more than half the layers does not localize anything)."""
    if spec is None:
        sizes, w = [1], 2
        while w <= max(1, n_layers // 2):
            sizes.append(w)
            w *= 2
        return sizes
    sizes = [int(x) for x in spec.split(",") if x.strip()] if isinstance(spec, str) else [int(x) for x in spec]
    bad = [w for w in sizes if not 1 <= w <= n_layers]
    if bad or not sizes:
        raise ValueError(f"window sizes must be between 1 and {n_layers} (the layer count), got {spec!r}")
    return sorted(set(sizes))


CONFIRM_AT = 0.5  # a window's necessity is run where its sufficiency reaches this share of the gap (triage)


def window_sweep(pair: ModelPair, metric: Metric, sizes: list[int] | None = None,
                 modules: tuple[str, ...] | None = None, resumed: tuple | None = None,
                 necessity_at: float | None = None) -> dict:
    """Sufficiency and necessity of every contiguous window ``i..i+w-1`` for each size ``w``
    (``resumed``: see ``graft_effect``; a window at block ``i`` then computes blocks ``i..`` only, and a larger
    window of the same start only the blocks from the end of the smaller one, ``causal.resumed.Chain``).

    ``necessity_at`` (a triage, e.g. ``CONFIRM_AT``): a window of more than one layer is reverted (necessity) only
    where its sufficiency is at least this share of the gap, its necessity None elsewhere: a carrier must be both
    (``carrier_window``, the verdict's bar 0.8), so no carrier is missed. Single layers always run both ways
    (``profile.ranking_from_windows`` reads them). None: every window both ways.

    Costs ``2 + 2 * sum_w (n_layers - w + 1)`` metric evaluations (forward passes over the prompts) without triage;
    with it ``2 + sum_w (n_layers - w + 1) + n_layers`` plus one per window confirmed (``confirmed``).
    Returns JSON-ready ``{"base", "tuned", "gap", "sizes", "windows": {w: {"starts", "sufficiency",
    "necessity"}}, "passes", "necessity_at", "confirmed"}``.
    """
    n = pair.n_layers
    sizes = window_sizes(n) if sizes is None else sizes
    m_base, m_tuned = metric(pair.base), metric(pair.tuned)
    gap = m_tuned - m_base
    chained = bool(resumed) and modules is None  # per start, the windows grow: each enters at the blocks it adds
    effects: dict[tuple[int, int], tuple[float, float | None]] = {}
    passes = 2

    with stage("graft windows", total=sum(n - w + 1 for w in sizes), unit="window") as advance:
        for i in range(n):
            todo = [w for w in sizes if i + w <= n]
            up: dict[int, float] = {}
            chain, new = (Chain(resumed[0]) if chained else None), i
            for w in todo:
                m = grafted_metric(pair, metric, 0, list(range(i, i + w)), modules, resumed, chain, new)
                up[w] = (m - m_base) / gap if gap else float("nan")
                new, passes = i + w, passes + 1
            chain, new = (Chain(resumed[1]) if chained else None), i
            for w in todo:
                down = None
                if necessity_at is None or w == 1 or up[w] >= necessity_at:
                    m = grafted_metric(pair, metric, 1, list(range(i, i + w)), modules, resumed, chain, new)
                    down = (m_tuned - m) / gap if gap else float("nan")
                    new, passes = i + w, passes + 1
                effects[w, i] = (up[w], down)
                advance()
    windows = {}
    for w in sizes:
        starts = list(range(n - w + 1))
        windows[str(w)] = {"starts": starts, "sufficiency": [effects[w, i][0] for i in starts],
                           "necessity": [effects[w, i][1] for i in starts]}
    confirmed = sum(1 for (w, _), (_, d) in effects.items() if w > 1 and d is not None) if necessity_at is not None else None
    return {"base": m_base, "tuned": m_tuned, "gap": gap, "sizes": sizes, "n_layers": n,
            "modules": list(modules or []), "windows": windows, "passes": passes, "necessity_at": necessity_at,
            "confirmed": confirmed, "engine": "resumed" if resumed and all(r.exact for r in resumed) else "full"}


def carrier_window(sweep: dict, threshold: float = 0.8) -> dict | None:
    """The smallest window that is both sufficient and necessary (each >= ``threshold`` of the gap),
    the best such window of that size; None when no swept window carries the gap."""
    for w in sweep["sizes"]:
        row = sweep["windows"][str(w)]
        scores = [min(s, n) if n is not None else float("nan")  # None: not reverted (triage), not a carrier
                  for s, n in zip(row["sufficiency"], row["necessity"], strict=True)]
        ok = [i for i, x in enumerate(scores) if x == x and x >= threshold]
        if ok:
            best = max(ok, key=lambda i: scores[i])
            start = row["starts"][best]
            return {"layers": list(range(start, start + w)), "size": w, "sufficiency": row["sufficiency"][best],
                    "necessity": row["necessity"][best]}
    return None


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
