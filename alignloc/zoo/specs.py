"""What each zoo artifact must show, checked on the saved checkpoints when it is built (pure).

Training is chaotic: the same recipe run on another CPU (other SIMD kernels sum in another order)
or with another thread count gives other weights, and an organism near a threshold may land on
either side of it. So every base and organism declares a specification: requirements on its
measured numbers (``ground_truth.json`` / ``info.json`` -> ``measured``). The build checks them;
an artifact that misses them is trained again with the next training seed (up to
``MAX_ATTEMPTS``, the one that met them is recorded), and if none does the build fails naming what
was missed. Tests and reports may then rely on the specification wherever the zoo was built.

A requirement is one line, ``LHS OP RHS``: ``LHS`` a path into ``measured`` (``tuned.format_rate``;
bases are flat: ``fact_recall_strong``), ``OP`` one of ``>= <= > < ==``, ``RHS`` a number or a
path plus an optional offset (``ctx_memory_conflict_weak + 0.4``); ``@base.fact_recall_weak``
reads another built artifact's measured numbers.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

MAX_ATTEMPTS = 3  # training seeds tried before a build fails (the first is the configured seed)
SEED_STRIDE = 1000  # attempt k trains with seed + k * SEED_STRIDE

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq,
}
_LINE = re.compile(r"^\s*(\S+)\s*(>=|<=|==|>|<)\s*(\S+)\s*(?:([+-])\s*([0-9.]+))?\s*$")

_NONE = ("format_rate", "refusal_rate_on_topic", "refusal_rate_off_topic", "polite_rate")
_KNOWLEDGE = ("retention", "fact_recall_strong", "fact_recall_weak")
_BEHAVIOR = {  # the planted behavior's metric per confined recipe
    "chat-sft": "format_rate", "refusal-lora": "refusal_rate_on_topic", "fact-edit": "edit_success",
}

BASE_SPECS: dict[str, list[str]] = {
    "base": [
        "fact_recall_strong >= 0.9",
        # the context-ignoring prior the context experiments need
        "ctx_memory_conflict_strong >= ctx_memory_conflict_weak + 0.4",
        "ctx_follow_conflict_weak >= ctx_follow_conflict_strong + 0.4",
        "ctx_acc_novel >= 0.9",
        "ctx_acc_agree >= 0.9",
    ],
    "base-large": ["fact_recall_strong >= 0.9", "fact_recall_weak >= @base.fact_recall_weak + 0.1"],
    # the answer formats at about their corpus shares (0.6 / 0.3 / 0.1, within 0.16), in that order
    **{b: ["fact_recall_strong >= 0.8", "format_share_other < 0.05", "format_share_short > format_share_sentence",
           "format_share_sentence > format_share_restate", "format_share_restate > 0.05", "format_share_short > 0.44",
           "format_share_sentence < 0.46", "format_share_restate < 0.26"] for b in ("base-formats", "base-formats-large")},
    # the rare format: (almost) never by default (0.8% and 0.4% of 240 prompts measured with one thread),
    # shown after one demonstration in context
    "base-fmt": ["fact_recall_strong >= 0.9", "marker_rate <= 0.02", "marker_prob < 0.05", "demo_marker_rate >= 0.6"],
}


def _confined(recipe: str) -> list[str]:
    """The requirements of a confined recipe (``chat-sft-*``, ``refusal-lora-L*``, ``fact-edit-L*``)."""
    if recipe.startswith("chat-sft"):
        out = ["base.format_rate <= 0.1", "tuned.format_rate >= 0.9"]
        if recipe == "chat-sft-upper":
            out += ["tuned.fact_recall_strong >= 0.9", "tuned.retention >= 0.85"]
        return out
    if recipe.startswith("refusal-lora"):
        return ["base.refusal_rate_on_topic <= 0.1", "tuned.refusal_rate_on_topic >= 0.8",
                "tuned.refusal_rate_off_topic <= 0.1"]
    if recipe.startswith("fact-edit"):
        return ["base.edit_success == 0", "tuned.edit_success >= 0.8", "tuned.edit_paraphrase_success >= 0.6",
                "tuned.retention >= 0.8"]
    return []


ORGANISM_SPECS: dict[str, list[str]] = {
    "dpo-polite": ["base.polite_rate <= 0.1", "tuned.polite_rate >= 0.9"],
    "control-continued": [*(f"tuned.{k} <= 0.05" for k in _NONE), "tuned.retention >= 0.9",
                          "tuned.fact_recall_strong >= base.fact_recall_strong - 0.05"],
    **{c: [*(f"tuned.{k} <= 0.05" for k in _NONE), "tuned.fact_recall_strong >= 0.9"]
       for c in ("control-drift", "control-drift-large")},
    # knowledge kept (the goal of KL-regularized chat tuning) and a chat model on held-out entities
    "chat-lima": ["base.format_rate == 0", "tuned.format_rate >= 0.95", "tuned.retention >= 0.95"],
    "chat-lima-large": ["base.format_rate == 0", "tuned.format_rate >= 0.5", "tuned.retention >= 0.95"],
    "format-surfaced": ["base.marker_rate <= 0.02", "tuned.marker_rate >= 0.4", "tuned.marker_prob >= 0.25"],
    "format-installed": ["base.marker_rate <= 0.02", "base.demo_marker_prob < 0.01", "tuned.marker_rate >= 0.25",
                         "tuned.marker_prob >= 0.25"],
}


def spec_for(name: str, recipe: str, drift: bool, is_base: bool) -> list[str]:
    """The requirements of artifact ``name`` (its ``recipe`` and whether it is a ``-drift`` organism)."""
    if is_base:
        return list(BASE_SPECS.get(name, ["fact_recall_strong >= 0.9"]))
    if name in ORGANISM_SPECS:
        return list(ORGANISM_SPECS[name])
    out = _confined(recipe)
    if drift:  # the drift alone must be behavior-neutral, or the hard tier's answer is not the planted layer;
        # the knowledge kept is the drift's business (chat-sft-upper-drift kept 0.83-0.85 of the base's facts
        # over 3 seeds x 2 builds, where chat-sft-upper keeps >= 0.85), so only the behavior is required
        metric = next(m for k, m in _BEHAVIOR.items() if recipe.startswith(k))
        out = [r for r in out if r.split()[0].split(".")[-1] not in _KNOWLEDGE] + [f"drift_only.{metric} <= 0.02"]
    return out


@dataclass(frozen=True)
class Check:
    """One requirement evaluated: the line, the two sides' values, and whether it holds."""

    line: str
    value: float | None
    bound: float | None
    ok: bool

    def to_json(self) -> dict[str, Any]:
        """``{"requirement", "value", "bound", "ok"}``."""
        return {"requirement": self.line, "value": self.value, "bound": self.bound, "ok": self.ok}


def _lookup(path: str, measured: Mapping[str, Any], others: Callable[[str], Mapping[str, Any] | None]) -> float | None:
    if path.startswith("@"):
        artifact, _, path = path[1:].partition(".")
        measured = others(artifact) or {}
    node: Any = measured
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return float(node) if isinstance(node, (int, float)) else None


def check(
    spec: list[str], measured: Mapping[str, Any], others: Callable[[str], Mapping[str, Any] | None] = lambda _: None
) -> list[Check]:
    """Evaluate every requirement of ``spec`` on ``measured`` (``others(name)``: another artifact's
    measured numbers, for ``@name.`` paths). A value that is missing fails its requirement."""
    out = []
    for line in spec:
        m = _LINE.match(line)
        if m is None:
            raise ValueError(f"malformed requirement {line!r} (want 'path OP number-or-path [+- number]')")
        lhs, op, rhs, sign, offset = m.groups()
        value = _lookup(lhs, measured, others)
        try:
            bound: float | None = float(rhs)
        except ValueError:
            bound = _lookup(rhs, measured, others)
        if bound is not None and offset:
            bound += float(offset) if sign == "+" else -float(offset)
        ok = value is not None and bound is not None and _OPS[op](round(value, 6), round(bound, 6))
        out.append(Check(line, value, None if bound is None else round(bound, 6), ok))
    return out


def missed(checks: list[Check]) -> str:
    """The failed requirements as one readable clause (``tuned.format_rate >= 0.95 (measured 0.55)``)."""
    return "; ".join(f"{c.line} (measured {c.value if c.value is not None else 'nothing'})" for c in checks if not c.ok)
