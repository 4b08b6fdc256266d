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

from alignloc.zoo.names import ZooError
from alignloc.zoo.prompts import organism_prompts
from alignloc.zoo.registry import (
    BASES,
    DEFAULT_ORGANISM,
    DEFAULT_ORGANISMS,
    DRIFT_CONTROL,
    HARD_ORGANISMS,
    NATURAL_ORGANISMS,
    SURFACING_ORGANISMS,
    ZooEntry,
    build,
    check_name,
    check_size,
    list_organisms,
    resolve,
    weights_sha256,
    zoo_root,
)

__all__ = [
    "BASES",
    "DEFAULT_ORGANISM",
    "DEFAULT_ORGANISMS",
    "DRIFT_CONTROL",
    "SURFACING_ORGANISMS",
    "HARD_ORGANISMS",
    "NATURAL_ORGANISMS",
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
