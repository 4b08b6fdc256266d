"""Hard organisms (``NAME-drift``): a behavior planted in known layers under a drift of *every* layer.

Why: in the confined organisms the layers outside the edit stay bit-identical, so "which weights
changed" already answers "where is the edit", and a weight-norm lookup scores perfectly. Real
post-training (a full fine-tune) moves every weight, and there the weight norms point wherever
training happened to write most, not where the behavior lives. A ``-drift`` organism reproduces
that on purpose, with a known answer:

1. **drift**: the delta of ``control-drift`` (continued pretraining of the base on the world
   corpus; behavior-neutral: no recipe phrase is trained; the hard tier's shared drift-only
   control), added to every parameter;
2. the recipe trains only its planted parameters, on a **mixture of contexts** each step: the
   base, the fully drifted model, and the base with a random half of its blocks drifted, so the
   planted delta carries the behavior whichever layers around it drifted (grafted alone into the
   base, and inside the drifted tuned model);
3. a **function-preserving reparametrization** of every block, applied to the drifted models:
   ``q_proj * c, k_proj / c``; ``v_proj * c, o_proj / c``; ``up_proj * c, down_proj / c`` (each
   block computes exactly the same function, up to float rounding; a test checks it), with
   factors per block chosen as the smallest that make the drift's relative norm at least
   ``margin`` times the planted delta's in every planted block, and ``ratio`` times the planted
   blocks' total change in every other block. This is the extreme of what DARE found in real
   fine-tunes (most of a delta can be dropped without effect): weight change without function
   change. At this size, training alone cannot make a behavior-neutral drift outweigh the
   planted delta (a planted SFT moves its layers by ~1x their norm; a continued-pretraining
   drift rescaled that far no longer leaves room for the behavior: measured, see the README);
4. ``tuned = R(base + drift + planted)``, ``drift/ = R(base + drift)``: the organism's exact null
   pair (same drift, no behavior); ``tuned - drift/`` is the planted delta (reparametrized).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable

import torch

from alignloc.analyses.weights import module_of
from alignloc.models.families import Family, family_for
from alignloc.zoo.names import ARCH_TABLE
from alignloc.zoo.training import train

State = dict[str, torch.Tensor]  # HF parameter name -> tensor
FACTORS = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0, 8.0)


def planted_layers(recipe: str, k: int | None, n_layers: int) -> list[int]:
    """The blocks a confined recipe trains (``recipe`` with ``{k}``, as in ``RecipeName.recipe``)."""
    if recipe == "chat-sft-upper":
        return list(range(n_layers // 2, n_layers))
    if recipe == "chat-sft-lower":
        return list(range(n_layers // 2))
    if recipe in ("refusal-lora-L{k}", "fact-edit-L{k}") and k is not None:
        return [k]
    raise ValueError(f"recipe {recipe!r} has no confined layers to plant under a drift")


def hf_name(name: str) -> str:
    """A parameter name of a plain HF model, also for a peft-wrapped one (``base_model.model.``,
    ``.base_layer``)."""
    return name.removeprefix("base_model.model.").replace(".base_layer.", ".")


def mixture_loss(drift: State, family: Family, n_layers: int) -> Callable:
    """A ``train`` loss: mean LM loss in the base, in the fully drifted model, and with a random
    half of the blocks (and of the outside parameters) drifted. Uses the torch RNG (seeded by the
    recipe's ``deterministic``)."""
    from torch.func import functional_call

    def loss_fn(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        named = [(n, p, hf_name(n)) for n, p in model.named_parameters()]
        named = [(n, p, h) for n, p, h in named if h in drift]
        keep = torch.rand(n_layers + 1) < 0.5  # [layer + 1]; the last entry stands for "outside"
        drifted = {n: p + drift[h] for n, p, h in named}
        mixed = {n: p + drift[h] for n, p, h in named if keep[module_of(h, family)[0]]}
        losses = [model(**inputs).loss, functional_call(model, drifted, args=(), kwargs=inputs).loss,
                  functional_call(model, mixed, args=(), kwargs=inputs).loss]
        return sum(losses) / len(losses)

    return loss_fn


def rescale(state: State, layer: int, factors: tuple[float, ...], model_type: str) -> State:
    """A copy of ``state`` with block ``layer`` reparametrized: for each pair ``(a, b)`` of the
    architecture's ``rescale_pairs``, ``a`` (weight and bias) times ``c`` and ``b`` times ``1/c``
    (its bias too for the q/k pair). The block's function is unchanged."""
    table = ARCH_TABLE[model_type]
    out = dict(state)
    for (a, b, b_bias), c in zip(table["rescale_pairs"], factors, strict=True):
        pre = f"{table['layers']}.{layer}."
        for suffix in ("weight", "bias"):
            if f"{pre}{a}.{suffix}" in out:
                out[f"{pre}{a}.{suffix}"] = out[f"{pre}{a}.{suffix}"] * c
            if f"{pre}{b}.{suffix}" in out and (suffix == "weight" or b_bias):
                out[f"{pre}{b}.{suffix}"] = out[f"{pre}{b}.{suffix}"] / c
    return out


def block_norm(delta: State, base: State, layer: int, family: Family) -> float:
    """Relative Frobenius norm ``||delta_l|| / ||W_base,l||`` of one block (weight_diff's measure)."""
    num = den = 0.0
    for name, w in base.items():
        if module_of(name, family)[0] == layer:
            num += float(delta[name].float().pow(2).sum())
            den += float(w.float().pow(2).sum())
    return math.sqrt(num / den) if den else 0.0


def _candidates(n_pairs: int) -> list[tuple[float, ...]]:
    """Factor tuples ordered by how far they are from the identity (sum of |log c|)."""
    grid = sorted({*FACTORS, *(1 / f for f in FACTORS)})
    return sorted(itertools.product(grid, repeat=n_pairs), key=lambda cs: (sum(abs(math.log(c)) for c in cs), cs))


def _exponent(name: str, layer: int, model_type: str) -> tuple[int, int]:
    """``(pair index, +1 | -1 | 0)``: how ``rescale`` scales a parameter (``c ** sign`` of that pair)."""
    table = ARCH_TABLE[model_type]
    pre = f"{table['layers']}.{layer}."
    for i, (a, b, b_bias) in enumerate(table["rescale_pairs"]):
        if name.startswith(pre + a + "."):
            return i, 1
        if name == f"{pre}{b}.weight" or (b_bias and name == f"{pre}{b}.bias"):
            return i, -1
    return 0, 0


def choose_factors(base: State, drifted: State, tuned: State, layer: int, family: Family, model_type: str,
                   need: Callable[[float, float], bool]) -> tuple[tuple[float, ...], float, float]:
    """The least distorting factors (sum of |log c|) for one block such that ``need(drift_norm,
    planted_norm)`` (relative norms of ``R(drifted) - base`` and ``R(tuned) - R(drifted)``); returns
    them with the two norms (the candidate with the largest margin if none meets ``need``).

    Each norm is a quadratic in the factors, so candidates are scored from per-parameter sums."""
    stats = []  # (pair, sign, ||D||^2, <D, B>, ||B||^2, ||T - D||^2)
    for name, w in base.items():
        if module_of(name, family)[0] != layer:
            continue
        d, t = drifted[name].float(), tuned[name].float()
        stats.append((*_exponent(name, layer, model_type), float(d.pow(2).sum()), float((d * w).sum()),
                      float(w.pow(2).sum()), float((t - d).pow(2).sum())))
    den = sum(x[4] for x in stats) or 1.0
    n_pairs = len(ARCH_TABLE[model_type]["rescale_pairs"])
    best = None
    for cs in _candidates(n_pairs):
        dn = pn = 0.0
        for pair, sign, a, b, e, p in stats:
            f = cs[pair] ** sign
            dn += f * f * a - 2 * f * b + e
            pn += f * f * p
        dn, pn = math.sqrt(max(dn, 0.0) / den), math.sqrt(pn / den)
        if need(dn, pn):
            return cs, dn, pn
        if best is None or dn - pn > best[1] - best[2]:
            best = (cs, dn, pn)
    return best


def drifted(parsed, base, tok, world, cfg, drift_model, run: Callable, log=None):
    """Build ``parsed`` (a ``-drift`` name) on ``base`` with the drift of ``drift_model`` (``control-drift``).

    ``run(plain_parsed, base, tok, world, cfg, log, train_fn)`` runs the confined recipe.
    """
    import dataclasses

    planted = planted_layers(parsed.recipe, parsed.k, base.config.num_hidden_layers)
    org = plant_under_drift(base, drift_model, planted,
                            lambda train_fn: run(dataclasses.replace(parsed, drift=False), base, tok, world, cfg, log,
                                                 train_fn),
                            cfg.drift, "control-drift: continued pretraining of the base on the world corpus")
    org.name, org.recipe = parsed.name, f"{org.recipe}-drift"
    return org


def plant_under_drift(base, drift_model, planted: list[int], train_plant: Callable, spec, source: str):
    """Steps 2-4 of the module docstring for any recipe: ``train_plant(train_fn)`` trains the planted
    part (with ``train_fn`` as its training loop) and returns its Organism; returns it with the drift
    and the reparametrization applied, ``drift_only`` set and the norms in ``extra["drift"]``."""
    from alignloc.analyses.weights import weight_diff
    from alignloc.zoo.pretrain import clone_model

    family, n, mt = family_for(base.config), base.config.num_hidden_layers, base.config.model_type
    base_sd = {k: v.detach().clone().float() for k, v in base.state_dict().items()}
    cpt = drift_model.state_dict()
    delta = {k: cpt[k].float() - v for k, v in base_sd.items()}
    org = train_plant(functools.partial(train, loss_fn=mixture_loss(delta, family, n)))
    plant = {k: v.float() - base_sd[k] for k, v in org.tuned.state_dict().items()}
    d_state = {k: base_sd[k] + delta[k] for k in base_sd}
    t_state = {k: d_state[k] + plant[k] for k in base_sd}
    factors, norms = {}, {}
    for layer in planted:  # planted blocks first: the others must outweigh their total change
        cs, dn, pn = choose_factors(base_sd, d_state, t_state, layer, family, mt, lambda d, p: d >= spec.margin * p)
        factors[layer], norms[layer] = cs, (dn, pn)
        d_state, t_state = rescale(d_state, layer, cs, mt), rescale(t_state, layer, cs, mt)
    top = max(block_norm({k: t_state[k] - base_sd[k] for k in base_sd}, base_sd, layer, family) for layer in planted)
    for layer in (i for i in range(n) if i not in planted):
        cs, dn, pn = choose_factors(base_sd, d_state, t_state, layer, family, mt, lambda d, p: d >= spec.ratio * top)
        factors[layer], norms[layer] = cs, (dn, pn)
        d_state, t_state = rescale(d_state, layer, cs, mt), rescale(t_state, layer, cs, mt)
    natural = [block_norm(delta, base_sd, i, family) for i in range(n)]
    org.tuned.load_state_dict({k: v.to(base.dtype) for k, v in t_state.items()})
    org.drift_only = clone_model(base)
    org.drift_only.load_state_dict({k: v.to(base.dtype) for k, v in d_state.items()})
    total = [row["relative_frobenius"] for row in weight_diff(base_sd, t_state, family, n)["layers"]]
    ranking = sorted(range(n), key=lambda i: -total[i])
    drift_rel, plant_rel = [norms[i][0] for i in range(n)], [norms[i][1] for i in range(n)]
    org.extra["drift"] = {
        "source": source,
        "reparametrization": "per block: q_proj*c0, k_proj/c0; v_proj*c1, o_proj/c1; up_proj*c2, down_proj/c2",
        "factors": [list(factors[i]) for i in range(n)],
        "margin": spec.margin, "ratio": spec.ratio, "planted_layers": planted,
        "continued_pretraining_relative_norm": natural,
        "planted_relative_norm_before_reparametrization": [block_norm(plant, base_sd, i, family) for i in range(n)],
        "drift_relative_norm": drift_rel, "planted_relative_norm": plant_rel, "tuned_relative_norm": total,
        "drift_dominates_every_layer": all(d >= p for d, p in zip(drift_rel, plant_rel)),
        "weight_diff_ranking": ranking,
        "weight_diff_hit@1": float(ranking[0] in planted),
    }
    return org


def natural(parsed, base, tok, world, cfg, drift_model, run: Callable, log=None):
    """Build ``parsed`` (a ``-natural`` name): the confined recipe trained on top of ``drift_model``
    (``control-drift``: the base after continued pretraining of every layer), sequentially as real
    pipelines do, with no mixture objective and no reparametrization. ``drift_only`` is the drifted
    model itself (the exact null twin); the weight-diff ranking against the base is recorded as it
    comes out (``extra["natural"]["weight_diff_hit@1"]``), not arranged."""
    import dataclasses

    from alignloc.analyses.weights import weight_diff
    from alignloc.zoo.pretrain import clone_model

    n = base.config.num_hidden_layers
    planted = planted_layers(parsed.recipe, parsed.k, n)
    start = clone_model(drift_model)
    org = run(dataclasses.replace(parsed, natural=False), start, tok, world, cfg, log, train)
    org.name, org.recipe, org.adapter = parsed.name, f"{org.recipe}-natural", None  # an adapter would fit the drift
    org.drift_only = clone_model(drift_model)
    family = family_for(base.config)
    base_sd = {k: v.detach().float() for k, v in base.state_dict().items()}
    drift_sd = {k: v.detach().float() for k, v in drift_model.state_dict().items()}
    tuned_sd = {k: v.detach().float() for k, v in org.tuned.state_dict().items()}
    total = [row["relative_frobenius"] for row in weight_diff(base_sd, tuned_sd, family, n)["layers"]]
    ranking = sorted(range(n), key=lambda i: -total[i])
    drift_rel = [block_norm({k: drift_sd[k] - base_sd[k] for k in base_sd}, base_sd, i, family) for i in range(n)]
    plant_rel = [block_norm({k: tuned_sd[k] - drift_sd[k] for k in base_sd}, base_sd, i, family) for i in range(n)]
    org.extra["natural"] = {
        "source": "control-drift: continued pretraining of the base on the world corpus; then the recipe, "
                  "trained on that model as on a base",
        "planted_layers": planted, "drift_relative_norm": drift_rel, "planted_relative_norm": plant_rel,
        "tuned_relative_norm": total, "drift_dominates_every_layer": all(d >= p for d, p in zip(drift_rel, plant_rel)),
        "weight_diff_ranking": ranking, "weight_diff_hit@1": float(ranking[0] in planted),
    }
    return org
