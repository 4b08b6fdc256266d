"""Loading models and pairs, their site tables, scoped hooks and backends.

The package's names load on first use, so that its light modules (``refs``: references, and the
zoo's registration) can be imported without torch.
"""

from __future__ import annotations

from importlib import import_module

_EXPORTS = {
    "LoadOptions": "alignloc.models.load_options",
    "LoadedModel": "alignloc.models.pair",
    "ModelPair": "alignloc.models.pair",
    "PairMismatchError": "alignloc.models.pair",
    "load_model": "alignloc.models.pair",
    "load_pair": "alignloc.models.pair",
    "ModelRefError": "alignloc.models.refs",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'alignloc.models' has no attribute {name!r}")
