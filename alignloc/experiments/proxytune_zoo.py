"""Proxy-tuning with two chat organisms side by side: one that keeps its knowledge, one that forgets.

Proxy-tuning adds ``small tuned - small base`` to the large base's log-probs, so whatever the small
fine-tune lost (facts it forgot) travels with the behavior it gained. Running the experiment on
``chat-lima`` (KL to the base on pretraining text; keeps >= 95% of its base's facts) next to
``chat-sft-full`` (plain SFT; forgets about a third) separates the two: same large base, same
small base, same prompts, each organism judged against its own large twin for the behavior gap
(``proxytune.side_by_side``).

``proxy_tune_zoo()`` runs it on the tiny zoo in one call (a minute or two; builds what is missing).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alignloc.experiments.proxytune import BETAS, proxy_tune_report
from alignloc.report.results import ProxyTuneResult


def zoo_refs(organism: str) -> dict[str, str]:
    """The zoo models of ``proxy-tune --zoo`` for a behavior organism tuned from ``base``."""
    return {"large_base": "zoo:base-large", "small_base": "zoo:base", "small_tuned": f"zoo:{organism}",
            "large_tuned": f"zoo:{organism}-large"}


def proxy_tune_zoo(organism: str = "chat-lima", contrast: str | None = "chat-sft-full", out: str | Path | None = None,
                   betas=BETAS, layer_diff_large: bool = False,
                   log: Callable[[str], None] = lambda m: None) -> ProxyTuneResult:
    """``proxy-tune --zoo --organism ORGANISM --contrast CONTRAST`` as a function (tiny zoo; builds what is
    missing): the report (a ``ProxyTuneResult``), written under ``out`` when given (``verdict``, ``contrast``, ``side_by_side``)."""
    from alignloc.models.pair import load_model
    from alignloc.zoo import organism_prompts

    refs = zoo_refs(organism)
    lb, sb, st, lt = (load_model(refs[k]) for k in ("large_base", "small_base", "small_tuned", "large_tuned"))
    other = None
    if contrast:
        c = zoo_refs(contrast)
        other = {"label": c["small_tuned"], "small_tuned": load_model(c["small_tuned"]), "large_tuned": load_model(c["large_tuned"])}
    return proxy_tune_report(lb, sb, st, organism_prompts(organism), out if out is not None else Path("."), True, lt,
                             betas, layer_diff_large=layer_diff_large, write=out is not None, log=log, contrast=other)
