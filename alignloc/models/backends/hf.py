"""The default backend: forward hooks on the plain HF modules, stopping after the last site."""

from __future__ import annotations

import torch

from alignloc.models.families import check_site
from alignloc.models.hooks import run_recording
from alignloc.models.pair import LoadedModel
from alignloc.sites import Site


class HFBackend:
    """Record sites with scoped forward hooks on ``loaded.model``; skip layers after the last."""

    name = "hf"

    def __init__(self, loaded: LoadedModel, stop_early: bool = True):
        self.loaded = loaded
        self.stop_early = stop_early

    @torch.inference_mode()
    def run(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, sites: list[Site]
    ) -> dict[Site, torch.Tensor]:
        """Activations ``[batch, pos, d_model]`` at ``sites`` for one batch."""
        lm = self.loaded
        for s in sites:
            check_site(lm.family, lm.config, s)
        dev = lm.device  # the embedding's device (the first shard of a device map)
        return run_recording(
            lm.model, lm.family, sites, input_ids.to(dev), attention_mask.to(dev), stop=self.stop_early
        )
