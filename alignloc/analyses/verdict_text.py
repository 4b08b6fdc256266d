"""The verdict in words: each claim of ``verdict.summary`` with its numbers (``analyses.verdict`` decides, this
module says it)."""

from __future__ import annotations

from typing import Any


def span(layers: list[int]) -> str:
    """``layers`` as runs: "layers 2-3, 5" ("no layer" when empty)."""
    if not layers:
        return "no layer"
    runs, start = [], layers[0]
    for a, b in zip(layers, [*layers[1:], None], strict=True):
        if b != a + 1:
            runs.append(f"{start}" if start == a else f"{start}-{a}")
            start = b
    return "layer" + ("s " if len(layers) > 1 else " ") + ", ".join(runs)


def gap_text(gap: float, answer_tokens: float = 1.0) -> str:
    """A gap with its unit: "+1.20 nats", or "+0.34 nats per token, +5.4 per answer" where it is scored per
    token over answers of ``answer_tokens`` tokens on average."""
    if answer_tokens == 1.0:
        return f"{gap:+.2f} nats"
    return f"{gap:+.2f} nats per token, {gap * answer_tokens:+.1f} per answer"


def knowledge_preserved(know: dict | None, cfg: Any) -> bool | None:
    """Whether output-level knowledge is preserved: top-1 recall moved by at most ``cfg.preserve_points`` and
    the facts' mean log-prob fell by at most ``cfg.preserve_nats`` (None without knowledge prompts)."""
    if know is None:
        return None
    return bool(abs(100 * know["accuracy_delta"]["mean"]) <= cfg.preserve_points
                and know["logprob_delta"]["mean"] >= -cfg.preserve_nats)


def _why(block: dict) -> str:
    """The numbers behind a causal carrier: grafting, mask agreement, patching, corroboration."""
    c = block["carrier"]
    what = {"graft_window": "the window", "mask": "the mask-selected layers"}.get(
        c["source"], f"the top {len(c['layers'])} layers of the concentration profile ({c.get('metric', 'logprob')})")
    parts = [f"grafting {what} into the base "
             f"brings {c['sufficiency']:.2f} of the gap ({gap_text(block['gap'], block.get('answer_tokens', 1.0))}) and removing it from the tuned model costs "
             f"{c['necessity']:.2f}"]
    others = {src for srcs in block["named_by"].values() for src in srcs}
    agree = [name for name, key in (("the learned mask", "mask"), ("the graft window", "graft_window"),
                                    ("patching", "patching"), ("the lens", "lens")) if key in others and key != c["source"]]
    if agree:
        parts.append("named too by " + ", ".join(agree))
    w = [int(i) for i, srcs in block["named_by"].items() if "weights" in srcs]
    parts.append(f"weights corroborate at {span(sorted(w))}" if w else "the weights do not single these layers out")
    return "; ".join(parts)


def versus_line(block: dict) -> str:
    """The verdict on the part of the behavior gap the control does not share (tuned against the control)."""
    head = f"against the control (tuned vs control: the part of the behavior gap the control does not share, " \
           f"{gap_text(block['gap'], block.get('answer_tokens', 1.0))})" if "gap" in block else "against the control"
    if block["localized"]:
        return f"{head}: behavior carried by {span(block['layers'])}: {_why(block)}"
    if block["localized"] is None:
        return f"{head}: {block.get('reason', 'nothing to localize')}"
    label = {"concentrated": "concentrated but redundant", "distributed": "distributed"}.get(block.get("grade"), "")
    return f"{head}: behavior {label + ', ' if label else ''}not localized: {block['reason']}{_profile_text(block)}"


def _profile_text(block: dict) -> str:
    """The concentration profile in a clause: how many top-ranked layers bring / remove 80% of the gap."""
    p = block.get("profile")
    if not p:
        return ""
    k_s, k_n = p["k_sufficient"].get("0.8"), p["k_necessary"].get("0.8")
    sat = ("; the log-prob saturates, so necessity is read on the logit difference to the foil"
           if p["metric"] == "logprob+logit_diff" else "")
    upto = f" of at most {p['max_k']} layers" if p.get("max_k") else ""  # a profile the budget stopped early
    if not k_s and not k_n:
        found = f"no top-k set{upto} brings 80% of the gap into the base or removes 80% from the tuned model when reverted"
    else:
        bring = (f"the top {k_s} bring 80% of the gap into the base" if k_s else
                 f"no top-k set{upto} brings 80% of the gap into the base")
        remove = (f"reverting the top {k_n} removes 80% from the tuned model" if k_n else
                  f"no top-k set{upto} removes 80% from the tuned model when reverted")
        found = f"{bring}, {remove}"
    return f"; concentration profile (layers ranked by {p['ranking_source']}): {found}{sat}"


def summary_lines(blocks: dict, changed: list[int], know, beh, flags, has_control: bool, cfg: Any,  # a VerdictConfig
                  n_layers: int, weights: list[float], moved: dict | None = None) -> list[str]:
    """Plain-language claims, each with its numbers."""
    s = []
    if not changed:
        if flags["weights"]:
            s.append(f"weights moved above the floor at {span(flags['weights'])}, but neither the residual stream nor "
                     "the lens changed there above the floor")
        elif not has_control:
            s.append("no layer's weights stand out above the noise floor; any weight change is spread evenly over the "
                     "layers (give a control pair, e.g. --control CONTINUED_PRETRAINING_CKPT, to test it)")
        else:
            s.append("no layer's weights changed above the control pair's noise floor")
    elif len(changed) == n_layers:
        s.append(f"training wrote to every layer ({span(changed)}: weights above the floor, with the representation or "
                 "lens changing there)")
    else:
        s.append(f"training wrote most at {span(changed)} (weights above the floor, with the representation or lens "
                 "changing there); where the behavior and knowledge live is below")
    for kind, block in blocks.items():
        if block is None:
            continue
        if block["basis"] != "causal":
            if block["layers"]:
                s.append(f"{kind} gap appears in the logit lens at {span(block['layers'])}"
                         + (" where the weights changed" if block["basis"] == "lens+weights" else "")
                         + " (correlational: run layer-diff --causal to test which layers carry it)")
            elif block.get("reason") and "disagree" in block["reason"]:
                s.append(f"{kind}: {block['reason']} (run layer-diff --causal to test which layers carry it)")
            continue
        if block["localized"] is None:
            s.append(block["reason"])
        elif not block["localized"]:
            best = max(block.get("candidates") or [{}], key=lambda c: min(c.get("sufficiency", 0), c.get("necessity", 0)))
            tried = (f"; best found: {best['source']} {span(best['layers'])} with sufficiency {best['sufficiency']:.2f}, "
                     f"necessity {best['necessity']:.2f}") if best else ""
            label = {"concentrated": "concentrated but redundant", "distributed": "distributed"}.get(block.get("grade"), "")
            s.append(f"{kind} {label + ', ' if label else ''}not localized: {block['reason']}{tried}{_profile_text(block)}")
        else:
            s.append(f"{kind} carried by {span(block['layers'])}: {_why(block)}")
            top = sorted(range(n_layers), key=lambda i: -weights[i])[: len(block["layers"])]
            if not set(top) & set(block["layers"]):
                s.append(f"the largest weight changes ({span(sorted(top))}) carry none of the {kind}: weight norms "
                         "do not say where it lives here")
    if beh is not None:
        d = beh["logprob_delta"]
        s.append(f"target log-prob on behavior prompts {d['mean']:+.2f} nats [{d['lo']:+.2f}, {d['hi']:+.2f}]")
    if know is not None:
        a = know["accuracy_delta"]
        verdict_k = "recall preserved" if knowledge_preserved(know, cfg) else "recall changed"
        knowledge = (blocks.get("knowledge") or {}).get("layers") or []
        if knowledge and moved is not None:
            rates = ", ".join(f"{100 * moved['mean'][i]:.1f}% at layer {i}" for i in knowledge)
            where = f"knowledge change at {span(knowledge)} (facts moving by > 2 nats in the lens: {rates})"
        else:
            where = "no layer is named for knowledge"
        s.append(f"{where}; fact {verdict_k} ({100 * a['mean']:+.1f} pt [{100 * a['lo']:+.1f}, {100 * a['hi']:+.1f}], "
                 f"log-prob {know['logprob_delta']['mean']:+.2f} nats)")
    return s
