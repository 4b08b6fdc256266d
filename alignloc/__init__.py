"""alignloc: where inside a network does post-training land, and what kind of change is it?

Data flow: references -> models (load pair) -> capture (hooks) -> store (disk) -> analyses -> report;
whole experiments (``alignloc.layer_diff``, ``alignloc.experiments``) run over them.

    pair = alignloc.load_pair("base_dir", "tuned_dir")        # or alignloc.load_pair("zoo:chat-sft-upper")
    store = alignloc.capture(pair, "prompts.jsonl", out="acts/", sites="resid_post,mlp_out")
    store = alignloc.open_store("acts/")
    store.get("tuned", "resid_post", layer=3)                  # [n_prompts, d_model]
"""

from __future__ import annotations

from importlib import import_module

__version__ = "0.1.0"

# Public names, imported on first use so that `import alignloc` (and the CLI's --help) stay fast.
_EXPORTS = {
    "load_pair": "alignloc.models.pair",
    "load_model": "alignloc.models.pair",
    "LoadOptions": "alignloc.models.load_options",
    "ModelPair": "alignloc.models.pair",
    "capture": "alignloc.capturing",  # module not named capture.py: it would shadow the function
    "open_store": "alignloc.store",
    "Store": "alignloc.store",
    "Prompt": "alignloc.prompts",
    "load_prompts": "alignloc.prompts",
    "parse_sites": "alignloc.sites",
    "Site": "alignloc.sites",
    "layer_diff": "alignloc.experiments.layerdiff",  # the experiments room imports the zoo (zoo:NAME works)
    "LayerDiffConfig": "alignloc.layerdiff.config",
    "LayerDiffResult": "alignloc.report.results",
}

_TAKES_ZOO_REFS = {"load_pair", "load_model"}

__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        if name in _TAKES_ZOO_REFS:
            import_module("alignloc.zoo")  # light; registers zoo:NAME references (models/ never imports the zoo)
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'alignloc' has no attribute {name!r}")
