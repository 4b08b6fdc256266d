"""Surfaced vs installed: does post-training move the residual stream along directions the base
already uses for the behavior, or along new ones?

**The base's behavior subspace** (``behavior_subspace``), per layer, from the base's own residuals
on matched prompt pairs: the behavior prompt after one demonstration *in* the behavior format
(``h_demo``) and after the same demonstration in the plain format (``h_plain``). Why this choice:

* it is the base's **own** use of the behavior: the difference is what the base does when the
  context makes it show the behavior (LIMA's "the format is already there"), read off the base
  alone, with no tuned-model input, so the test of the tuned shift against it is not circular;
* matched pairs (the same query, the same demonstrated fact; only the format differs) cancel what
  the prompts are about, which a probe on unmatched prompts would pick up;
* it exists for any behavior, including one the base cannot show: then the contrast is whatever
  an unseen token in context does, and the tuned shift has no reason to lie along it (the
  installed case). A probe needs base labels of the behavior, which an installed behavior lacks.

The subspace is the mean difference ``u`` (the behavior direction) plus the top ``k - 1``
principal directions of the centred differences (how the contrast varies across prompts),
orthonormalised: ``[d, k]``.

**Measures per layer**, on behavior prompts (``shift = h_tuned - h_base`` of the same prompts):

* ``share``: the fraction of the mean shift's energy inside the subspace,
  ``||Q^T m||^2 / ||m||^2`` (1: all along base directions; ``k/d`` for a random subspace);
* ``share_per_prompt``: the same over every prompt's shift (common + prompt-specific energy);
* ``amplification``: ``<m, u> / ||g||``, the tuned shift along the base's behavior direction in
  units of the base's own in-context difference ``g`` (1: the tuned model moves as far as one
  demonstration moves the base; > 1: it scales the base direction up; ~0: no use of it);
* ``cosine``: ``cos(m, u)`` (amplification without rotation has a cosine near 1).

**Noise floor** per layer: the ``quantile`` of two nulls, whichever is higher: a random ``k``-dim
subspace (``k/d`` in expectation; anisotropy-blind), and a *placebo* null that fits the subspace
the same way on contrasts between prompts of one class (demo vs. demo, plain vs. plain: they
differ in what they ask, never in format), whose directions follow the base's high-variance
directions, so it catches a shift that lies there for reasons unrelated to the behavior. With a null pair (base vs. a checkpoint trained without the
behavior: ``drift/`` or ``control-*`` organisms), ``control_share`` (the null pair's share on the
same prompts) is reported and raises the floor too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float

LABELS = ("surfaced", "no evidence of surfacing", "mixed")  # the pair's label (``surfacing_verdict``)
SURFACED, NO_EVIDENCE, AGAINST = "surfaced", "no evidence", "against the base direction"  # a layer's
UNCHANGED = "no shift"  # a layer the tuning left (numerically) untouched: no label to give
MIN_RELATIVE_SHIFT = 1e-4  # |mean shift| / mean |h_base| below this is no shift


@dataclass(frozen=True)
class SurfacingConfig:
    """Settings of the measure (recorded in every result)."""

    k: int = 4  # subspace dimension: the behavior direction + k-1 principal directions
    n_null: int = 500  # draws of each null
    quantile: float = 0.95  # the floor is this quantile of the nulls
    majority: float = 0.5  # a label needs at least this share of the layers
    seed: int = 0
    n_boot: int = 200  # resamples of prompts and demonstration pairs for the share's interval
    level: float = 0.95  # of that interval


def behavior_subspace(
    h_demo: Float[torch.Tensor, "n d"], h_plain: Float[torch.Tensor, "n d"], k: int
) -> tuple[Float[torch.Tensor, "d k"], Float[torch.Tensor, " d"]]:
    """The base's behavior subspace ``Q [d, k]`` (orthonormal, column 0 = the behavior direction)
    and the mean difference ``g [d]`` of matched demo/plain residuals."""
    diff = h_demo.double() - h_plain.double()  # [n, d]
    g = diff.mean(0)  # [d]
    u = g / g.norm().clamp_min(1e-12)
    cen = diff - g  # [n, d]
    cen = cen - (cen @ u)[:, None] * u  # the PCA part is orthogonal to u
    k_pc = max(0, min(k - 1, cen.shape[0] - 1, cen.shape[1] - 1))
    _, _, vh = torch.linalg.svd(cen, full_matrices=False)  # vh [min(n, d), d]
    q, _ = torch.linalg.qr(torch.cat([u[:, None], vh[:k_pc].T], dim=1))  # [d, k]
    q[:, 0] *= torch.sign(q[:, 0] @ u)  # keep column 0 pointing along u
    return q, g


def energy_share(shift: Float[torch.Tensor, "... d"], q: Float[torch.Tensor, "d k"]) -> float:
    """Fraction of the energy of ``shift`` (one vector or rows) inside the span of ``q``."""
    s = shift.double().reshape(-1, shift.shape[-1])  # [n, d]
    total = s.pow(2).sum()
    return float((s @ q.double()).pow(2).sum() / total) if total > 0 else 0.0


def amplification(mean_shift: Float[torch.Tensor, " d"], g: Float[torch.Tensor, " d"]) -> float:
    """``<m, g/|g|> / |g|``: the shift along the base's behavior direction in units of the base's
    own in-context difference (1 = as far as a demonstration moves the base)."""
    gn = g.double().norm()
    return float(mean_shift.double() @ g.double() / gn**2) if gn > 0 else 0.0


def cosine(a: Float[torch.Tensor, " d"], b: Float[torch.Tensor, " d"]) -> float:
    """Cosine of two vectors (0 if either is zero)."""
    den = a.double().norm() * b.double().norm()
    return float(a.double() @ b.double() / den) if den > 0 else 0.0


def random_subspace_null(shift: Float[torch.Tensor, "... d"], k: int, n: int, seed: int) -> torch.Tensor:
    """``[n]`` shares of ``shift``'s energy in uniformly random ``k``-dim subspaces (mean ``k/d``)."""
    d = shift.shape[-1]
    gen = torch.Generator().manual_seed(seed)
    out = torch.empty(n, dtype=torch.float64)
    for i in range(n):
        q, _ = torch.linalg.qr(torch.randn(d, k, generator=gen, dtype=torch.float64))
        out[i] = energy_share(shift, q)
    return out


def placebo_null(
    shift: Float[torch.Tensor, "... d"],
    h_demo: Float[torch.Tensor, "m d"],
    h_plain: Float[torch.Tensor, "m d"],
    k: int,
    n: int,
    seed: int,
) -> torch.Tensor:
    """``[n]`` shares of ``shift`` in subspaces fitted the same way on *placebo* contrasts: each
    residual paired with a random other residual of its own class (demo with demo, plain with
    plain), so the pairs differ in what they ask, never in format. The fitted directions follow the
    base's high-variance directions without the behavior. (Shuffling the demo/plain labels instead
    would keep the behavior: the between-class difference stays the largest variance direction.)"""
    m = h_demo.shape[0]
    x = torch.cat([h_demo, h_plain]).double()  # [2m, d]
    gen = torch.Generator().manual_seed(seed)
    out = torch.empty(n, dtype=torch.float64)
    for i in range(n):
        perm = torch.cat([torch.randperm(m, generator=gen), m + torch.randperm(m, generator=gen)])
        q, _ = behavior_subspace(x, x[perm], k)
        out[i] = energy_share(shift, q)
    return out


def layer_surfacing(
    h_base: Float[torch.Tensor, "n d"],
    h_tuned: Float[torch.Tensor, "n d"],
    h_demo: Float[torch.Tensor, "m d"],
    h_plain: Float[torch.Tensor, "m d"],
    cfg: SurfacingConfig,
    h_control: Float[torch.Tensor, "n d"] | None = None,
) -> dict:
    """Every measure of one layer (see the module docstring), JSON-ready."""
    q, g = behavior_subspace(h_demo, h_plain, cfg.k)
    shift = h_tuned.double() - h_base.double()  # [n, d]
    m = shift.mean(0)  # [d]
    rnd = random_subspace_null(m, q.shape[1], cfg.n_null, cfg.seed)
    placebo = placebo_null(m, h_demo, h_plain, cfg.k, cfg.n_null, cfg.seed + 1)
    out = {
        "share": energy_share(m, q),
        "share_per_prompt": energy_share(shift, q),
        "amplification": amplification(m, g),
        "cosine": cosine(m, g),
        "base_gap_norm": float(g.norm()),
        "shift_norm": float(m.norm()),
        "base_norm": float(h_base.double().norm(dim=-1).mean()),
        "null_random": {"mean": float(rnd.mean()), "q": float(torch.quantile(rnd, cfg.quantile))},
        "null_placebo": {"mean": float(placebo.mean()), "q": float(torch.quantile(placebo, cfg.quantile))},
        "k": int(q.shape[1]),
        "d": int(q.shape[0]),
    }
    floor = max(out["null_random"]["q"], out["null_placebo"]["q"])
    if h_control is not None:
        out["control_share"] = energy_share(h_control.double().mean(0) - h_base.double().mean(0), q)
        floor = max(floor, out["control_share"])
    out["floor"] = floor
    out["share_ci"] = list(share_interval(shift, h_demo, h_plain, cfg.k, cfg.n_boot, cfg.seed + 2, cfg.level))
    return out


def share_interval(
    shift: Float[torch.Tensor, "n d"],
    h_demo: Float[torch.Tensor, "m d"],
    h_plain: Float[torch.Tensor, "m d"],
    k: int,
    n_boot: int,
    seed: int,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of the mean shift's ``energy_share`` when the prompts (rows of ``shift``) and the
    matched demonstration pairs (rows of ``h_demo`` / ``h_plain`` together) are resampled with replacement:
    the subspace is fitted again on each resample, so the interval carries both sources of noise."""
    gen = torch.Generator().manual_seed(seed)
    n, m = shift.shape[0], h_demo.shape[0]
    out = torch.empty(n_boot, dtype=torch.float64)
    for b in range(n_boot):
        i = torch.randint(n, (n,), generator=gen)
        j = torch.randint(m, (m,), generator=gen)
        q, _ = behavior_subspace(h_demo[j], h_plain[j], k)
        out[b] = energy_share(shift[i].double().mean(0), q)
    tail = (1 - level) / 2
    return float(out.quantile(tail)), float(out.quantile(1 - tail))


def label_layer(row: dict) -> str:
    """``surfaced`` (the share's interval lies above the noise floor and the shift runs along +u), ``against the
    base direction`` (above the floor, along -u), ``no evidence`` (the interval reaches the floor: the shift is
    not told apart from the nulls; this is not evidence that the behavior was installed), or ``no shift`` (the
    layer's mean shift is under ``MIN_RELATIVE_SHIFT`` of the residual norm)."""
    if row["shift_norm"] <= MIN_RELATIVE_SHIFT * row["base_norm"]:
        return UNCHANGED
    lo = row.get("share_ci", [row["share"]])[0]
    if lo > row["floor"]:
        return SURFACED if row["amplification"] > 0 else AGAINST
    return NO_EVIDENCE


def surfacing_verdict(layers: list[dict], cfg: SurfacingConfig | None = None) -> dict:
    """The pair's label from per-layer rows: ``surfaced`` if at least ``cfg.majority`` of the shifted layers
    read surfaced (and more than read no evidence), ``no evidence of surfacing`` if none does, else ``mixed``; with a one-line summary that
    quotes the shares with their intervals and the floors."""
    cfg = cfg or SurfacingConfig()
    labels = [label_layer(r) for r in layers]
    n = sum(lab != UNCHANGED for lab in labels)
    count = {lab: labels.count(lab) for lab in (SURFACED, NO_EVIDENCE, AGAINST)}
    if n and count[SURFACED] >= cfg.majority * n and count[SURFACED] > count[NO_EVIDENCE]:
        label = LABELS[0]
    elif count[SURFACED] == 0:
        label = LABELS[1]
    else:
        label = LABELS[2]
    shares = ", ".join(f"{r['share']:.2f} [{r['share_ci'][0]:.2f}, {r['share_ci'][1]:.2f}]" if "share_ci" in r
                       else f"{r['share']:.2f}" for r, lab in zip(layers, labels, strict=True) if lab != UNCHANGED)
    floors = ", ".join(f"{r['floor']:.2f}" for r, lab in zip(layers, labels, strict=True) if lab != UNCHANGED)
    amps = ", ".join(f"{r['amplification']:+.2f}" for r, lab in zip(layers, labels, strict=True) if lab != UNCHANGED)
    kd = f"{layers[0]['k'] / layers[0]['d']:.2f}" if layers else "-"
    summary = (f"{label}: share of the tuned shift along the base's in-context behavior subspace per shifted layer "
               f"{shares or '-'} (noise floor {floors or '-'}; random {layers[0]['k'] if layers else '-'}-dim subspace "
               f"expects {kd}); amplification {amps or '-'}")
    return {"label": label, "layer_labels": labels, "counts": count, "summary": summary}


def surfacing_by_layer(
    h_base: Float[torch.Tensor, "layer n d"],
    h_tuned: Float[torch.Tensor, "layer n d"],
    h_demo: Float[torch.Tensor, "layer m d"],
    h_plain: Float[torch.Tensor, "layer m d"],
    cfg: SurfacingConfig | None = None,
    h_control: Float[torch.Tensor, "layer n d"] | None = None,
) -> dict:
    """Per-layer measures and the verdict: ``{"layers": [...], "verdict": {...}, "config": {...}}``."""
    cfg = cfg or SurfacingConfig()
    rows = [
        layer_surfacing(h_base[i], h_tuned[i], h_demo[i], h_plain[i], cfg,
                        None if h_control is None else h_control[i])
        for i in range(h_base.shape[0])
    ]
    return {"layers": rows, "verdict": surfacing_verdict(rows, cfg), "config": cfg.__dict__.copy()}
