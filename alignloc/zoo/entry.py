"""Where the zoo lives on disk and what a built artifact is (shared by the synthetic and real tiers)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_VAR = "ALIGNLOC_ZOO"


@dataclass(frozen=True)
class ZooEntry:
    """A built organism (or base): where its files are and what was planted."""

    name: str
    path: Path
    base: Path
    tuned: Path | None
    ground_truth: dict[str, Any]
    prompts: dict[str, Path]
    drift: Path | None = None  # -drift organisms: base + the same drift without the edit


def zoo_root() -> Path:
    """The zoo directory: ``$ALIGNLOC_ZOO`` if set, else the user cache dir + ``/zoo``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("alignloc")) / "zoo"
