"""What every backend's ``run`` does before its own work (``alignloc.models.backends``)."""

from __future__ import annotations

import torch

from alignloc.models.families import check_site
from alignloc.models.pair import LoadedModel
from alignloc.sites import Site


class CheckedRun:
    """The part of ``run`` every backend shares: each site is checked against the model's family
    (``check_site``) and an empty request returns ``{}``; the backend's ``_run`` does the rest."""

    loaded: LoadedModel

    def run(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, sites: list[Site]
    ) -> dict[Site, torch.Tensor]:
        """Activations ``[batch, pos, d_model]`` at ``sites`` for one batch."""
        for s in sites:
            check_site(self.loaded.family, self.loaded.config, s)
        return self._run(input_ids, attention_mask, sites) if sites else {}

    def _run(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, sites: list[Site]) -> dict[Site, torch.Tensor]:
        raise NotImplementedError
