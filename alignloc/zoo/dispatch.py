"""One way from an organism's parsed name to the recipe that trains it.

Every organism the zoo builds goes through ``train_organism``: the confined recipes of ``recipes``
(``chat-sft-*``, ``refusal-lora-L{k}``, ``fact-edit-L{k}``, ``dpo-polite``, the controls), the organisms
with a module of their own (``rl-formats``, ``chat-lima``, the surfacing pair ``format-surfaced`` /
``format-installed``), and the ``-drift`` / ``-natural`` variants of a confined recipe (``drift``), which
call back into it for the plain recipe. ``OWN_SPEC`` names the organisms whose fingerprint also holds a
specification block of their own (``artifacts`` reads it).
"""

from __future__ import annotations

from collections.abc import Callable

from transformers import PreTrainedModel

from alignloc.zoo.config import SizeConfig
from alignloc.zoo.drift import drifted, natural
from alignloc.zoo.fmtorgs import SURFACING_ORGANISMS, format_sft
from alignloc.zoo.lima import chat_lima
from alignloc.zoo.names import RecipeName
from alignloc.zoo.recipes import (
    Organism,
    chat_sft,
    control_continued,
    dpo_polite,
    fact_edit,
    refusal_lora,
)
from alignloc.zoo.rl import rl_formats
from alignloc.zoo.training import train
from alignloc.zoo.world import World

OWN_SPEC = {"rl-formats": "formats", "chat-lima": "lima"}  # recipe -> the SizeConfig block in its fingerprint


def train_organism(parsed: RecipeName, base: PreTrainedModel, tok, world: World, cfg: SizeConfig,
                   log: Callable[[str], None] | None = None, train_fn: Callable = train,
                   drift_model: PreTrainedModel | None = None) -> Organism:
    """Train the organism ``parsed`` names on ``base`` (a ``-drift`` or ``-natural`` name needs
    ``drift_model``, the ``control-drift`` checkpoint); ``train_fn`` is the confined recipes' training loop
    (a drift variant changes its loss)."""
    rec, k, name = parsed.recipe, parsed.k, parsed.name
    if parsed.natural or parsed.drift:
        if drift_model is None:
            raise ValueError(f"{name}: a -{'natural' if parsed.natural else 'drift'} organism needs the control-drift model")
        variant = natural if parsed.natural else drifted
        return variant(parsed, base, tok, world, cfg, drift_model, train_organism, log)
    if rec == "rl-formats":
        return rl_formats(base, tok, world, cfg, name, log=log)
    if rec == "chat-lima":
        return chat_lima(base, tok, world, cfg, name, log=log)
    if name in SURFACING_ORGANISMS:
        return format_sft(base, tok, world, cfg, rec.removeprefix("format-"), name, log)
    if rec.startswith("chat-sft-"):
        return chat_sft(base, tok, world, cfg, rec.removeprefix("chat-sft-"), name, log, train_fn)
    if rec == "refusal-lora-L{k}":
        return refusal_lora(base, tok, world, cfg, k, name, log, train_fn)
    if rec == "fact-edit-L{k}":
        return fact_edit(base, tok, world, cfg, k, name, log, train_fn)
    if rec == "dpo-polite":
        return dpo_polite(base, tok, world, cfg, name, log)
    if rec in ("control-continued", "control-drift"):
        return control_continued(base, tok, world, cfg, name, log, drift=rec == "control-drift")
    raise ValueError(f"no recipe {rec!r}")


