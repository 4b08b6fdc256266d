"""Backends run a loaded model on token ids and return activations at canonical sites.

All backends take the same ``input_ids [batch, pos]`` and ``attention_mask [batch, pos]`` and
return ``{Site: [batch, pos, d_model]}`` float tensors; tests check they agree to 1e-4.

- ``hf``: forward hooks on the plain HF modules through the per-family site table; stops after
  the last requested layer. The default: it is the fastest (see benchmarks/capture.py).
- ``bridge``: TransformerLens v4 ``TransformerBridge`` (``run_with_cache`` filtered to the sites).
- ``nnsight``: an nnsight trace; the route to remote execution (NDIF) of very large models.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from alignloc.errors import UserError
from alignloc.models.pair import LoadedModel
from alignloc.sites import Site

BACKENDS = ("hf", "bridge", "nnsight")
DEFAULT_BACKEND = "hf"


class BackendError(UserError, ValueError):
    """An unknown backend, or one that cannot run the requested model."""


def check_backend(name: str) -> str:
    """Return ``name`` if it is a known backend, else raise BackendError listing them."""
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r} (choose one of {', '.join(BACKENDS)})")
    return name


@runtime_checkable
class Backend(Protocol):
    """What capture needs from a backend."""

    name: str

    def run(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, sites: list[Site]
    ) -> dict[Site, torch.Tensor]:
        """Activations ``[batch, pos, d_model]`` at ``sites`` for one batch."""
        ...


def make_backend(name: str, loaded: LoadedModel, **options) -> Backend:
    """Construct backend ``name`` (hf | bridge | nnsight) around a loaded model."""
    if name == "hf":
        from alignloc.models.backends.hf import HFBackend

        return HFBackend(loaded, **options)
    if name == "bridge":
        from alignloc.models.backends.bridge import BridgeBackend

        return BridgeBackend(loaded, **options)
    if name == "nnsight":
        from alignloc.models.backends.nnsight_backend import NNsightBackend

        return NNsightBackend(loaded, **options)
    raise BackendError(f"unknown backend {name!r} (choose one of {', '.join(BACKENDS)})")
