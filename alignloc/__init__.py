"""alignloc: where inside a network does post-training land, and what kind of change is it?

Data flow: references -> models (load pair) -> capture (hooks) -> store (disk) -> analyses -> report.
"""

__version__ = "0.1.0"

from alignloc.prompts import Prompt, load_prompts  # noqa: E402

__all__ = ["Prompt", "load_prompts", "__version__"]
