"""The prompts an organism ships, as one list: what every command uses when given ``zoo:NAME``."""

from __future__ import annotations

import dataclasses

from alignloc.prompts import Prompt, load_prompts
from alignloc.zoo.registry import resolve


def organism_prompts(name: str, size: str = "tiny") -> list[Prompt]:
    """All prompts an organism ships (every file under its ``prompts/``), with unique ids.

    Builds the organism on first use. On an id collision between files, the later id is
    prefixed with its file's stem (``chat/k-001``). Unknown names raise ``ZooError``.
    """
    out, seen = [], set()
    for stem, path in sorted(resolve(name, size=size).prompts.items()):
        for p in load_prompts(path):
            if p.id in seen:
                p = dataclasses.replace(p, id=f"{stem}/{p.id}")
            seen.add(p.id)
            out.append(p)
    return out
