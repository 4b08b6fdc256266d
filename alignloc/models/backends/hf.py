"""The default backend: forward hooks on the plain HF modules, stopping after the last site."""

from __future__ import annotations

import torch

from alignloc.models.backends.base import CheckedRun
from alignloc.models.hooks import run_recording
from alignloc.models.pair import LoadedModel
from alignloc.sites import Site


class HFBackend(CheckedRun):
    """Record sites with scoped forward hooks on ``loaded.model``; skip layers after the last."""

    name = "hf"

    def __init__(self, loaded: LoadedModel, stop_early: bool = True):
        self.loaded = loaded
        self.stop_early = stop_early

    @torch.inference_mode()
    def _run(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, sites: list[Site]) -> dict[Site, torch.Tensor]:
        lm = self.loaded
        dev = lm.device  # the embedding's device (the first shard of a device map)
        return run_recording(
            lm.model, lm.family, sites, input_ids.to(dev), attention_mask.to(dev), stop=self.stop_early
        )
