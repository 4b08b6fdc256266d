"""Organism names and the per-architecture module table (pure).

Names: ``chat-sft-upper|lower|full``, ``chat-lima``, ``refusal-lora-L{k}``, ``fact-edit-L{k}``, ``dpo-polite``,
``control-continued``, ``control-drift``, ``rl-formats`` (RL on the ``base-formats`` base, see
``formats.py``), each optionally with a ``-large`` suffix (the recipe
applied to ``base-large``). The confined recipes (``chat-sft-upper|lower``, ``refusal-lora-L{k}``,
``fact-edit-L{k}``) also come as ``NAME-drift``: the same edit under a drift of every layer (see
``drift.py``; the adversarial hard tier), and as ``NAME-natural``: the same edit trained on top of that
drift, sequentially, with no rescaling and no mixture objective (``drift.natural``). ``format-surfaced|installed`` are built on ``base-fmt`` (``fmtorgs.py``) and have
no variants. ``parse_name`` validates ``k`` against the base's layer count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from alignloc.errors import UserError


class ZooError(UserError, ValueError):
    """An unknown organism name or zoo size; the message lists the valid ones."""


# Architectures as tables: where the blocks live and what their modules are called.
ARCH_TABLE: dict[str, dict[str, Any]] = {
    "llama": {
        "layers": "model.layers",
        "mlp": ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"),
        "lora_targets": [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
        "lora_pattern": "layers",
        # function-preserving rescalings inside a block (drift.py): (scaled by c, scaled by 1/c,
        # whether the second one's bias scales too: q.k products and up/down, v/o products)
        "rescale_pairs": (
            ("self_attn.q_proj", "self_attn.k_proj", True),
            ("self_attn.v_proj", "self_attn.o_proj", False),
            ("mlp.up_proj", "mlp.down_proj", False),
        ),
    },
    "gpt2": {
        "layers": "transformer.h",
        "mlp": ("mlp.c_fc", "mlp.c_proj"),
        "lora_targets": ["c_attn", "c_proj", "c_fc"],
        "lora_pattern": "h",
    },
}
RECIPES = (
    "chat-sft-upper",
    "chat-sft-lower",
    "chat-sft-full",
    "chat-lima",
    "refusal-lora-L{k}",
    "fact-edit-L{k}",
    "dpo-polite",
    "control-continued",
    "control-drift",
    "rl-formats",
    "format-surfaced",
    "format-installed",
)
SURFACING_RECIPES = ("format-surfaced", "format-installed")  # on base-fmt only (fmtorgs.py)
DRIFTABLE = ("chat-sft-upper", "chat-sft-lower", "refusal-lora-L{k}", "fact-edit-L{k}")
_NAME = re.compile(
    r"^(chat-sft-upper|chat-sft-lower|chat-sft-full|chat-lima|refusal-lora-L(\d+)|fact-edit-L(\d+)|dpo-polite|"
    r"control-continued|control-drift|rl-formats|format-surfaced|format-installed)(-drift|-natural)?(-large)?$"
)


@dataclass(frozen=True)
class RecipeName:
    """A parsed organism name."""

    name: str
    recipe: str  # the name with ``{k}`` in place of the layer index, without ``-large``
    k: int | None
    base: str  # base | base-large | base-formats[-large] (rl-formats) | base-fmt (format-*)
    drift: bool = False  # the ``-drift`` variant (planted under a drift of every layer)
    natural: bool = False  # the ``-natural`` variant (trained on top of that drift, sequentially)


def parse_name(name: str, n_layers: dict[str, int]) -> RecipeName:
    """Parse and validate an organism name against the layer counts of the bases (ZooError if invalid)."""
    m = _NAME.match(name)
    base = "base-large" if m and m.group(5) else "base"
    if not m:
        raise ZooError(f"unknown organism {name!r} ({valid_names_hint(n_layers)})")
    k_str = m.group(2) or m.group(3)
    k = int(k_str) if k_str is not None else None
    if m.group(1) == "rl-formats":
        base = base.replace("base", "base-formats")
    recipe = m.group(1) if k is None else m.group(1).replace(f"L{k_str}", "L{k}")
    drift, natural = m.group(4) == "-drift", m.group(4) == "-natural"
    if recipe in SURFACING_RECIPES:
        if m.group(4) or m.group(5):
            raise ZooError(f"organism {name!r}: {recipe} has no -drift, -natural or -large variant (it is built on "
                           "base-fmt)")
        base = "base-fmt"
    if m.group(4) and recipe not in DRIFTABLE:
        raise ValueError(f"organism {name!r}: only {', '.join(r + m.group(4) for r in DRIFTABLE)} have a "
                         f"{m.group(4)} variant")
    if k is not None and not 0 <= k < n_layers[base]:
        raise ZooError(
            f"organism {name!r}: layer {k} out of range: {base} has layers 0..{n_layers[base] - 1} ("
            + valid_names_hint(n_layers) + ")"
        )
    return RecipeName(name=name, recipe=recipe, k=k, base=base, drift=drift, natural=natural)


def drift_control(parsed: RecipeName) -> str:
    """The drift a ``-drift`` / ``-natural`` organism is built from: ``control-drift`` on its own base
    (``control-drift-large`` for a ``-large`` one)."""
    return "control-drift" + ("-large" if parsed.base == "base-large" else "")


def valid_names_hint(n_layers: dict[str, int]) -> str:
    """A sentence listing the valid names and layer ranges."""
    return (
        "valid names: base, base-large, base-formats, base-formats-large, base-fmt, "
        + ", ".join(RECIPES)
        + f" with k in 0..{n_layers['base'] - 1}; add '-drift' to "
        + ", ".join(DRIFTABLE)
        + " for the adversarial hard variant or '-natural' for the natural one; add '-large' to any recipe to apply it to "
        f"base-large (k in 0..{n_layers['base-large'] - 1})"
    )
