"""The verdict: where does the change live, and is it behavior or knowledge?

Per-layer *lines of evidence*, each a value with a bootstrap interval and a noise floor:

- ``weights``: relative Frobenius norm of the weight change of the block;
- ``representation``: what the block adds to the residual stream's relative L2 shift
  (layer 0 is measured against the embeddings);
- ``lens``: what the block adds to the logit-lens KL(base || tuned);
- ``behavior``: what the block adds to the tuned-minus-base lens log-prob of the targets of
  ``behavior`` prompts (e.g. the format marker or refusal), averaged over those prompts;
- ``knowledge``: the share of ``knowledge`` prompts whose fact's lens log-prob gap moves by more
  than 2 nats at the block (an edit of a few facts is invisible in a mean over all facts); the
  sign of the change is read from the outputs (recall, log-prob).

**Floors.** With a control pair (base vs. a checkpoint trained without the edit, e.g. continued
pretraining), the floor of each line is ``control_margin`` times the control's value (its
interval's far end). Without one, it is ``background_factor`` times the pair's own background (the
25th percentile of |value| across layers), so only layers that *stand out* count. Each line also
has an absolute minimum (``MIN_FLOOR``).

**Rules (schema 2).** A weight change is where training *wrote*, not where the behavior *lives*:
in a full fine-tune every layer moves. So layers are named from functional evidence only, and the
weights line corroborates without gating:

- ``behavior_layers`` / ``knowledge_layers``, with causal evidence (``layer-diff --causal``,
  ``alignloc.causal.localize``, on the behavior prompts and on the facts that moved): the smallest
  layer set that is both sufficient and necessary for at least ``carrier_at`` of the gap, among
  the smallest carrier window of weight grafting, the learned mask's selection (checked by
  grafting it) and the concentration profile's top-k sets (``causal.profile``). Each kind gets a
  ``grade``: **localized** (such a set of at most ``max_share`` of the layers exists: named),
  **concentrated** but redundant (a set that small brings ``carrier_at`` of the gap into the base
  alone, but none that small is also necessary: the tuned model carries it elsewhere too; the set
  and its necessity are given, and no layer is named), or **distributed** (no set that small is
  even sufficient). A gap under ``min_gap`` nats per answer is no change (no grade): a gap scored per
  token (the tuned model's own answers) counts times the answers' mean length, so a narrow change that
  moves an answer's first tokens by 5 nats is not dismissed for being 0.3 nats per token.
- ``behavior_vs_control``, with causal evidence and a control pair: the same rules on the part of the
  behavior gap that the control does not share (the pair control -> tuned; ``causal.report.versus_control``):
  where the control is the training without the edit (a drift, continued pretraining), the edit's own
  layers, named in ``behavior_layers_vs_control``.
- without causal evidence (correlational fallback): the layers where the kind's lens line is above
  its floor, intersected with the weights' flags when the weights single out at most
  ``max_share`` of the layers (``basis: "lens+weights"``; on a disagreement nothing is named and
  the verdict says so), else the lens alone (``basis: "lens"``): a change that spreads through
  every layer's weights cannot corroborate anything. ``localized`` is then None: where a gap shows
  in the lens is not which layers carry it (on a real SFT the lens lit 14 scattered layers of 30
  while no graft window of up to 8 layers carried even 6% of the gap out of the tuned model).
- ``changed_layers``: where training *wrote*: the weights line above its floor with the
  representation or lens line corroborating it there (as in schema 1). It does not say where the
  behavior lives; the two blocks above do.
- every named layer lists the evidence that names it (``named_by``): ``graft_window``, ``mask``,
  ``patching`` (attention or MLP output, or the residual increment, recovering >= ``patch_at``),
  ``lens``, and ``weights`` (above their floor: corroboration only).

**Surfaced vs installed** (when the prompts carry demonstrations): ``verdict.surfacing`` is
``analyses.surfacing.surfacing_verdict`` (surfaced | no evidence of surfacing | mixed) with the
per-layer share, floor and amplification; it has its own floor (random-subspace and placebo nulls,
and the control pair's share when there is one).

Output-level knowledge is *preserved* when top-1 recall moved by at most ``preserve_points`` and
the mean log-prob of the facts by at most ``preserve_nats``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from alignloc.analyses.concentration import at_k, smallest_k
from alignloc.analyses.stats import background
from alignloc.analyses.verdict_text import (
    gap_text,
    knowledge_preserved,
    span,
    summary_lines,
    versus_line,
)

MIN_FLOOR = {"weights": 1e-6, "representation": 0.01, "lens": 0.01, "behavior": 0.05, "knowledge": 0.005}


@dataclass(frozen=True)
class VerdictConfig:
    """Thresholds of the verdict (recorded in every report)."""

    background_factor: float = 3.0
    control_margin: float = 1.5
    preserve_points: float = 5.0
    preserve_nats: float = 0.5
    carrier_at: float = 0.8  # a carrier set must be sufficient and necessary for this share of the gap
    max_share: float = 0.5  # ... and hold at most this share of the layers, else "not localized"
    patch_at: float = 0.5  # patching names a layer that recovers this share of the gap
    min_gap: float = 0.5  # nats per answer: a smaller gap is no change to localize

    def too_small(self, gap: float, answer_tokens: float = 1.0) -> bool:
        """Whether ``gap`` is no change to localize: under ``min_gap`` nats per answer, i.e. ``gap`` times the
        mean scored tokens per answer (``answer_tokens``: 1 for summed targets); NaN is too small."""
        return not abs(gap) * answer_tokens >= self.min_gap

    def carries(self, candidate: dict, n_layers: int) -> bool:
        """Whether a layer set ``{"layers", "sufficiency", "necessity"}`` may be named: small enough
        (at most ``max_share`` of the layers) and both sufficient and necessary for ``carrier_at``."""
        return (len(candidate["layers"]) <= self.max_share * n_layers
                and min(candidate["sufficiency"], candidate["necessity"]) >= self.carrier_at)


def evidence_lines(m: dict) -> dict[str, dict[str, list[float]]]:
    """Per line: ``{"mean", "lo", "hi"}`` per layer, from one pair's measures (see layerdiff.measures)."""
    w = [r["relative_frobenius"] for r in m["weights"]["layers"]]
    lines = {
        "weights": {"mean": w, "lo": w, "hi": w},
        "representation": m["shift"]["relative_l2_increment"],
        "lens": m["lens"]["kl_increment"],
    }
    tl = m["lens"]["target_logprob"]
    if "behavior" in tl:
        lines["behavior"] = tl["behavior"]["gap_increment"]
    if "knowledge" in tl:
        lines["knowledge"] = tl["knowledge"]["moved_rate"]
    return lines


def floors(lines: dict, control_lines: dict | None, cfg: VerdictConfig) -> dict[str, list[float]]:
    """The noise floor of each line per layer (see the module docstring)."""
    out = {}
    for name, ci in lines.items():
        n = len(ci["mean"])
        if control_lines is not None and name in control_lines:
            c = control_lines[name]
            raw = [cfg.control_margin * max(abs(lo), abs(hi)) for lo, hi in zip(c["lo"], c["hi"], strict=True)]
        else:
            raw = [cfg.background_factor * background([abs(v) for v in ci["mean"]])] * n
        out[name] = [max(MIN_FLOOR[name], f) for f in raw]
    return out


def flagged(ci: dict[str, list[float]], floor: list[float]) -> list[int]:
    """Layers whose interval lies entirely beyond ``±floor`` (two-sided)."""
    return [i for i, (lo, hi, f) in enumerate(zip(ci["lo"], ci["hi"], floor, strict=True)) if lo > f or hi < -f]


def _carrier(loc: dict, cfg: VerdictConfig, n_layers: int) -> tuple[dict | None, list[dict]]:
    """The chosen carrier set (the smallest of the window, the mask selection and the profile's top-k sets
    that meet the bar) and every candidate considered, each ``{"source", "layers", "sufficiency", "necessity"}``."""
    cands = []
    if loc.get("carrier"):
        c = loc["carrier"]
        cands.append({"source": "graft_window", "layers": c["layers"], "sufficiency": c["sufficiency"],
                      "necessity": c["necessity"]})
    sel = (loc.get("mask") or {}).get("recovery", {}).get("selected")
    if sel and sel["layers"]:
        cands.append({"source": "mask", **sel})
    prof = loc.get("profile")
    if prof:
        k = next((k for k in range(1, len(prof["sets"]) + 1) if cfg.carries(at_k(prof, k), n_layers)), None)
        if k is not None:
            cands.append({"source": "profile", "metric": prof["metric"],
                          **{key: at_k(prof, k)[key] for key in ("layers", "sufficiency", "necessity")}})
    ok = [c for c in cands if cfg.carries(c, n_layers)]
    order = {"graft_window": 0, "mask": 1, "profile": 2}
    best = min(ok, key=lambda c: (len(c["layers"]), order[c["source"]])) if ok else None
    return best, cands


def sufficient_set(loc: dict, cfg: VerdictConfig, n_layers: int) -> dict | None:
    """The smallest set of at most ``max_share`` of the layers whose graft alone brings ``carrier_at`` of the gap into
    the base, with its necessity; None if there is none. Read on the concentration profile (nested top-k sets, with
    intervals) when there is one, else on the graft windows: a single window's sufficiency on a small gap is noisy
    (a null pair's window brought 0.99 of a -0.78-nat gap while every layer together brought 0.02)."""
    small = int(cfg.max_share * n_layers)
    prof = loc.get("profile")
    if prof:
        k = smallest_k(prof["sufficiency"]["mean"], cfg.carrier_at)
        return {"source": "profile", **at_k(prof, k)} if k is not None and k <= small else None
    win = loc.get("windows") or {}
    for w in [w for w in win.get("sizes", []) if w <= small]:
        row = win["windows"][str(w)]
        ok = [i for i, x in enumerate(row["sufficiency"]) if x == x and x >= cfg.carrier_at]
        if ok:
            i = max(ok, key=lambda j: row["sufficiency"][j])
            start = row["starts"][i]
            return {"source": "graft_window", "layers": list(range(start, start + w)),
                    "sufficiency": row["sufficiency"][i], "necessity": row["necessity"][i]}
    return None


def _patching_layers(loc: dict, at: float) -> list[int]:
    """Layers where attention / MLP output patching, or the residual increment, recovers >= ``at``."""
    p = loc.get("patching") or {}
    rows = [p[k] for k in ("attn_out", "mlp_out", "resid_increment") if k in p]
    return sorted({i for row in rows for i, v in enumerate(row) if v == v and v >= at})


def functional_block(kind: str, loc: dict | None, lens_flags: list[int], weight_flags: list[int],
                     cfg: VerdictConfig, n_layers: int, output_gap: float | None = None,
                     answer_tokens: float = 1.0) -> dict:
    """Which layers carry one kind's gap, on what evidence (see the module docstring).

    ``output_gap``: the kind's mean output-level change (nats; per token where its prompts are scored so, with
    ``answer_tokens`` their mean length); without causal evidence a gap under ``min_gap`` nats per answer names
    nothing (the lens lines alone flag noise on a null pair). A causal ``loc`` carries its own ``answer_tokens``."""
    if loc is None and output_gap is not None and cfg.too_small(output_gap, answer_tokens):
        return {"basis": "lens", "layers": [], "localized": None, "lens_layers": sorted(lens_flags), "named_by": {},
                "reason": f"the {kind} prompts' target log-prob moved by {gap_text(output_gap, answer_tokens)}, "
                          f"under {cfg.min_gap} per answer: no change to localize"}
    if loc is None:  # correlational fallback: the lens, corroborated by the weights where they single layers out
        informative = bool(weight_flags) and len(weight_flags) <= cfg.max_share * n_layers
        layers = sorted(set(lens_flags) & set(weight_flags)) if informative else sorted(lens_flags)
        block = {"basis": "lens+weights" if informative else "lens", "layers": layers,
                 "localized": None,  # correlational: where the gap shows, not which layers carry it (--causal)
                 "lens_layers": sorted(lens_flags),
                 "named_by": {str(i): ["lens"] + (["weights"] if i in weight_flags else []) for i in layers}}
        if informative and lens_flags and not layers:
            block["reason"] = (f"the lens shows the {kind} gap at {span(sorted(lens_flags))} but the weights changed most "
                               f"at {span(sorted(weight_flags))}: they disagree")
        return block
    gap, tokens = loc["gap"], loc.get("answer_tokens", 1.0)
    block = {"basis": "causal", "gap": gap, "answer_tokens": tokens, "n": loc["n"], "layers": [], "localized": None,
             "named_by": {}}
    if cfg.too_small(gap, tokens):
        block["reason"] = f"gap {gap_text(gap, tokens)} is below {cfg.min_gap} per answer: no {kind} change to localize"
        return block
    best, cands = _carrier(loc, cfg, n_layers)
    block["candidates"] = cands
    prof = loc.get("profile")
    if prof:
        block["profile"] = {key: prof[key] for key in ("metric", "ranking_source", "k_sufficient", "k_necessary",
                                                        "saturated", "tuned_target_probability") if key in prof}
        if len(prof["sets"]) < n_layers:  # the budget grafted the sets of up to max_k layers only
            block["profile"]["max_k"] = len(prof["sets"])
    if best is None:
        block["localized"] = False
        small = int(cfg.max_share * n_layers)
        suff = sufficient_set(loc, cfg, n_layers)
        if suff is not None:
            block.update(grade="concentrated", sufficient=suff,
                         reason=f"{span(suff['layers'])} alone bring {suff['sufficiency']:.2f} of the gap into the base, "
                                f"but reverting them in the tuned model removes only {suff['necessity']:.2f}: "
                                "the tuned model carries it elsewhere too (redundant)")
        else:
            block.update(grade="distributed",
                         reason=f"no set of at most {small} layers brings {cfg.carrier_at:.0%} of the gap into the base "
                                "or is both sufficient and necessary for it")
        return block
    mask_sel = next((c["layers"] for c in cands if c["source"] == "mask"), [])
    window = next((c["layers"] for c in cands if c["source"] == "graft_window"), [])
    patched = _patching_layers(loc, cfg.patch_at)
    named = {}
    for i in best["layers"]:
        named[str(i)] = ([src for src, ls in (("graft_window", window), ("mask", mask_sel), ("patching", patched),
                                         ("lens", lens_flags), ("weights", weight_flags)) if i in ls])
    block.update(layers=best["layers"], localized=True, grade="localized", named_by=named, carrier=best,
                 agreement={"window_vs_mask": _jaccard(window, mask_sel), "patching": patched})
    return block


def _jaccard(a: list[int], b: list[int]) -> float | None:
    return len(set(a) & set(b)) / len(set(a) | set(b)) if (a or b) else None


def verdict(m: dict, control: dict | None = None, cfg: VerdictConfig | None = None,
            localization: dict | None = None) -> dict:
    """Combine one pair's measures (a control pair's for floors, causal ``localization`` blocks per
    kind from ``alignloc.causal.localize``) into the verdict block."""
    cfg = cfg or VerdictConfig()
    lines = evidence_lines(m)
    n = len(lines["weights"]["mean"])
    control_lines = evidence_lines(control) if control is not None else None
    fl = floors(lines, control_lines, cfg)
    flags = {name: flagged(ci, fl[name]) for name, ci in lines.items()}
    functional = set(flags["representation"]) | set(flags["lens"])
    changed = sorted(functional & set(flags["weights"]))
    loc = localization or {}
    outs = m["outputs"]
    beh_out = outs.get("behavior") or {}
    gap = beh_out["logprob_delta"]["mean"] if beh_out else None
    blocks = {kind: functional_block(kind, loc.get(kind) if localization is not None else None,
                                     flags.get(kind, []), flags["weights"], cfg, n, gap if kind == "behavior" else None,
                                     beh_out.get("answer_tokens", 1.0))
              for kind in ("behavior", "knowledge") if kind in lines or kind in loc}
    vs_loc = loc.get("behavior_vs_control")
    versus = functional_block("behavior", vs_loc, [], [], cfg, n) if vs_loc else None
    behavior = blocks.get("behavior", {}).get("layers", [])
    knowledge = blocks.get("knowledge", {}).get("layers", [])
    evidence = [
        {"line": name, "layer": i, "value": ci["mean"][i], "ci": [ci["lo"][i], ci["hi"][i]], "floor": fl[name][i],
         "above_floor": i in flags[name]}
        for name, ci in lines.items() for i in range(len(ci["mean"]))
    ]
    out = m["outputs"]
    know, beh = out.get("knowledge"), out.get("behavior")
    preserved = knowledge_preserved(know, cfg)
    kinds = [k for k, v in (("behavior", behavior), ("knowledge", knowledge)) if v]
    surf = m.get("surfacing")  # surfaced vs installed (analyses.surfacing), with its own floor
    surfacing = surf and {**surf["verdict"], "floor": [r["floor"] for r in surf["layers"]],
                          "share": [r["share"] for r in surf["layers"]],
                          "amplification": [r["amplification"] for r in surf["layers"]]}
    return {
        "changed_layers": changed,
        "behavior_layers": behavior,
        "knowledge_layers": knowledge,
        "behavior": blocks.get("behavior"),
        "behavior_vs_control": versus,
        "behavior_layers_vs_control": versus["layers"] if versus else None,
        "knowledge": blocks.get("knowledge"),
        "basis": "causal" if localization is not None else "correlational",
        "kind": "+".join(kinds) if kinds else ("unclassified" if changed else "none"),
        "localized": _any_localized(blocks),
        "grades": {kind: b.get("grade") for kind, b in blocks.items() if b and b.get("grade")},
        "distributed_weight_change": not flags["weights"] and any(v > MIN_FLOOR["weights"] for v in lines["weights"]["mean"]),
        "knowledge_preserved": preserved,
        "surfacing": surfacing,
        "flags": flags,
        "floors": fl,
        "floor_source": "control pair" if control is not None else "background (no control pair)",
        "config": asdict(cfg),
        "evidence": evidence,
        "summary": summary_lines(blocks, changed, know, beh, flags, control is not None, cfg, n,
                                 lines["weights"]["mean"], moved=lines.get("knowledge"))
        + ([versus_line(versus)] if versus else [])
        + ([f"surfaced vs installed: {surfacing['summary']}"] if surfacing else []),
    }


def _any_localized(blocks: dict) -> bool | None:
    """True if a kind is localized, False if causal evidence found none that is, None when untested (correlational)."""
    vals = [b.get("localized") for b in blocks.values() if b]
    return True if True in vals else (False if False in vals else None)
