"""The verdict: which layers changed, and whether the change is in behavior or in knowledge.

Five per-layer *lines of evidence*, each a value with a bootstrap interval and a noise floor:

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
25th percentile of |value| across layers), so only layers that *stand out* count: a change spread
evenly over all layers (continued pretraining, a full fine-tune) is then reported as distributed,
not localized. Each line also has an absolute minimum (``MIN_FLOOR``).

**Rules.** ``changed_layers``: the weights line is above its floor *and* the representation or
lens line corroborates it there (a weight change without functional effect does not count).
``behavior_layers`` / ``knowledge_layers``: changed layers where that line's interval clears the
floor (two-sided). Output-level knowledge is *preserved* when top-1 recall moved by at most
``preserve_points`` and the mean log-prob of the facts by at most ``preserve_nats``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from alignloc.analyses.stats import background

MIN_FLOOR = {"weights": 1e-6, "representation": 0.01, "lens": 0.01, "behavior": 0.05, "knowledge": 0.005}


@dataclass(frozen=True)
class VerdictConfig:
    """Thresholds of the verdict (recorded in every report)."""

    background_factor: float = 3.0
    control_margin: float = 1.5
    preserve_points: float = 5.0
    preserve_nats: float = 0.5


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


def _span(layers: list[int]) -> str:
    if not layers:
        return "no layer"
    runs, start = [], layers[0]
    for a, b in zip(layers, [*layers[1:], None], strict=True):
        if b != a + 1:
            runs.append(f"{start}" if start == a else f"{start}-{a}")
            start = b
    return "layer" + ("s " if len(layers) > 1 else " ") + ", ".join(runs)


def verdict(m: dict, control: dict | None = None, cfg: VerdictConfig | None = None) -> dict:
    """Combine one pair's measures (and optionally a control pair's) into the verdict block."""
    cfg = cfg or VerdictConfig()
    lines = evidence_lines(m)
    control_lines = evidence_lines(control) if control is not None else None
    fl = floors(lines, control_lines, cfg)
    flags = {name: flagged(ci, fl[name]) for name, ci in lines.items()}
    functional = set(flags["representation"]) | set(flags["lens"])
    changed = [layer for layer in flags["weights"] if layer in functional]
    behavior = [layer for layer in changed if layer in flags.get("behavior", [])]
    knowledge = [layer for layer in changed if layer in flags.get("knowledge", [])]
    evidence = [
        {"line": name, "layer": i, "value": ci["mean"][i], "ci": [ci["lo"][i], ci["hi"][i]], "floor": fl[name][i],
         "above_floor": i in flags[name]}
        for name, ci in lines.items() for i in range(len(ci["mean"]))
    ]
    out = m["outputs"]
    know, beh = out.get("knowledge"), out.get("behavior")
    preserved = None
    if know is not None:
        preserved = (abs(100 * know["accuracy_delta"]["mean"]) <= cfg.preserve_points
                     and know["logprob_delta"]["mean"] >= -cfg.preserve_nats)
    kinds = [k for k, v in (("behavior", behavior), ("knowledge", knowledge)) if v]
    localized = bool(changed) and len(changed) < len(lines["weights"]["mean"])
    return {
        "changed_layers": changed,
        "behavior_layers": behavior,
        "knowledge_layers": knowledge,
        "kind": "+".join(kinds) if kinds else ("unclassified" if changed else "none"),
        "localized": localized,
        "distributed_weight_change": not flags["weights"] and any(v > MIN_FLOOR["weights"] for v in lines["weights"]["mean"]),
        "knowledge_preserved": preserved,
        "flags": flags,
        "floors": fl,
        "floor_source": "control pair" if control is not None else "background (no control pair)",
        "config": asdict(cfg),
        "evidence": evidence,
        "summary": summary_lines(changed, behavior, knowledge, know, beh, flags, control is not None, cfg,
                                 n_layers=len(lines["weights"]["mean"]), moved=lines.get("knowledge")),
    }


def summary_lines(changed, behavior, knowledge, know, beh, flags, has_control: bool, cfg: VerdictConfig,
                  n_layers: int, moved: dict | None = None) -> list[str]:
    """Plain-language claims, each with its numbers."""
    s = []
    if not changed:
        if flags["weights"]:
            s.append(f"weights moved above the floor at {_span(flags['weights'])}, but neither the residual stream "
                     "nor the lens changed there above the floor: no functional change is localized")
        elif not has_control:
            s.append("no layer stands out above the noise floor; any change is spread evenly over the layers "
                     "(give a control pair, e.g. --control CONTINUED_PRETRAINING_CKPT, to test a distributed change)")
        else:
            s.append("no layer changed above the control pair's noise floor")
    elif len(changed) == n_layers:
        s.append(f"every layer changed above the floor ({_span(changed)}): the change is not localized")
    else:
        s.append(f"change localized to {_span(changed)} (weights, corroborated by the residual stream or the lens)")
    if beh is not None:
        d = beh["logprob_delta"]
        s.append(f"behavior gap {'concentrated in ' + _span(behavior) if behavior else 'not localized to any changed layer'}; "
                 f"target log-prob on behavior prompts {d['mean']:+.2f} nats [{d['lo']:+.2f}, {d['hi']:+.2f}]")
    if know is not None:
        a = know["accuracy_delta"]
        verdict_k = "recall preserved" if (abs(100 * a["mean"]) <= cfg.preserve_points
                                            and know["logprob_delta"]["mean"] >= -cfg.preserve_nats) else "recall changed"
        if knowledge and moved is not None:
            rates = ", ".join(f"{100 * moved['mean'][i]:.1f}% at layer {i}" for i in knowledge)
            where = f"knowledge change at {_span(knowledge)} (facts moving by > 2 nats: {rates})"
        else:
            where = "no layer changes knowledge above the floor"
        s.append(f"{where}; fact {verdict_k} ({100 * a['mean']:+.1f} pt [{100 * a['lo']:+.1f}, {100 * a['hi']:+.1f}], "
                 f"log-prob {know['logprob_delta']['mean']:+.2f} nats)")
    return s
