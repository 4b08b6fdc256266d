"""Model organisms: tiny base/post-trained pairs with a planted, recorded ground truth.

Every organism is a pair of ordinary Hugging Face checkpoints trained here on a synthetic world
(``world.py``): a base pretrained on facts at controlled frequencies, and a post-training recipe
(``recipes.py``) that changes known layers/modules. ``ground_truth.json`` records where the
change was planted and the behavior/knowledge numbers measured on the saved files.

    from alignloc.zoo import build, resolve
    entry = resolve("chat-sft-upper")          # builds the tiny zoo on first use
    entry.base, entry.tuned, entry.ground_truth["layers"], entry.prompts["chat"]
    prompts = organism_prompts("chat-sft-upper")  # every prompt it ships, as one list
"""

from importlib import import_module

from alignloc.zoo.names import ZooError

_FROM = {"organism_prompts": "alignloc.zoo.prompts"}


def __getattr__(name: str):
    """The registry's names, imported on first use (``import alignloc.zoo`` stays light: no torch)."""
    if name in __all__ and name != "ZooError":
        return getattr(import_module(_FROM.get(name, "alignloc.zoo.registry")), name)
    raise AttributeError(f"module 'alignloc.zoo' has no attribute {name!r}")


__all__ = [
    "BASES",
    "DEFAULT_ORGANISM",
    "DEFAULT_ORGANISMS",
    "DRIFT_CONTROL",
    "SURFACING_ORGANISMS",
    "HARD_ORGANISMS",
    "ZooEntry",
    "ZooError",
    "build",
    "check_size",
    "check_name",
    "list_organisms",
    "organism_prompts",
    "resolve",
    "weights_sha256",
    "zoo_root",
]
