"""Model organisms: tiny base/post-trained pairs with a planted, recorded ground truth.

Every organism is a pair of ordinary Hugging Face checkpoints trained here on a synthetic world
(``world.py``): a base pretrained on facts at controlled frequencies, and a post-training recipe
(``recipes.py``) that changes known layers/modules. ``ground_truth.json`` records where the
change was planted and the behavior/knowledge numbers measured on the saved files.

    from alignloc.zoo import build, resolve
    entry = resolve("chat-sft-upper")          # builds the tiny zoo on first use
    entry.base, entry.tuned, entry.ground_truth["layers"], entry.prompts["chat"]
    prompts = organism_prompts("chat-sft-upper")  # every prompt it ships, as one list

Importing the package is light (its names load torch on first use, like ``alignloc``'s own) and
registers the zoo with ``alignloc.models.refs`` (``register_zoo_resolver``): that is how
``load_pair("zoo:NAME")`` and every other ``zoo:`` reference reach the organisms, since nothing
below the zoo imports it. The command line and ``alignloc.experiments`` import it. ``zoo:NAME@SIZE`` reaches
every size in ``SIZES`` (``zoo:NAME`` alone: tiny).
"""

from __future__ import annotations

from importlib import import_module

from alignloc.models.refs import ZooResolver, register_zoo_resolver

_EXPORTS = {
    "ZooError": "alignloc.zoo.names",
    "organism_prompts": "alignloc.zoo.prompts",
    **{name: "alignloc.zoo.registry" for name in (
        "BASES", "DEFAULT_ORGANISM", "DEFAULT_ORGANISMS", "DRIFT_CONTROL", "HARD_ORGANISMS", "NATURAL_LARGE_ORGANISMS",
        "NATURAL_ORGANISMS",
        "SURFACING_ORGANISMS", "ZooEntry", "build", "check_name", "check_size", "list_organisms", "recipe_tokenizer",
        "resolve", "weights_sha256", "zoo_root")},
}

# Every zoo size: ``config.SIZES`` (built from scratch) and ``real.SIZE`` (edits on real weights), written out here
# so that naming them imports neither (a test keeps them equal).
TRAINED_SIZES = ("tiny", "small", "tiny-s1", "tiny-s2")
REAL_SIZE = "real"
SIZES = (*TRAINED_SIZES, REAL_SIZE)

__all__ = sorted([*_EXPORTS, "REAL_SIZE", "SIZES", "TRAINED_SIZES"])


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'alignloc.zoo' has no attribute {name!r}")


def _registry():
    return import_module("alignloc.zoo.registry")


register_zoo_resolver(ZooResolver(
    resolve=lambda *a, **k: _registry().resolve(*a, **k),
    check_name=lambda *a, **k: _registry().check_name(*a, **k),
    prompts=lambda *a, **k: import_module("alignloc.zoo.prompts").organism_prompts(*a, **k),
    recipe_tokenizer=lambda *a, **k: _registry().recipe_tokenizer(*a, **k),
    sizes=SIZES,
))
