"""What an analysis keeps of a model once its weights are released (one model in memory at a time).

- ``HeadView``: the final norm and unembedding only (the logit lens reads both models' heads;
  a head is ``d_vocab x d_model``, a small part of a model);
- ``CheckpointWeights``: the state-dict tensors of a model read one at a time from its
  safetensors files, so a weight diff needs one tensor of the released side at a time. The
  name map (state-dict name -> file key: tied weights and renamed heads included) is built while
  the model is still in memory, and every tensor comes back in the model's own dtype.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from alignloc.models.families import Family, get_module
from alignloc.models.pair import LoadedModel
from alignloc.models.placement import resident_state_dict


@dataclass
class HeadView:
    """``model`` holds only ``family.final_norm`` and ``family.unembed`` at their usual paths."""

    model: torch.nn.Module
    family: Family
    config: object


def head_only(lm: LoadedModel) -> HeadView:
    """A copy of the final norm and unembedding of ``lm``: what the logit lens needs. Copied, not
    shared: a tensor loaded from safetensors keeps its whole file's mapping (all the model's pages
    read so far) in memory for as long as it lives."""
    root = torch.nn.Module()
    for path in (lm.family.final_norm, lm.family.unembed):
        parent = root
        *dirs, leaf = path.split(".")
        for d in dirs:
            if not hasattr(parent, d):
                parent.add_module(d, torch.nn.Module())
            parent = getattr(parent, d)
        parent.add_module(leaf, copy.deepcopy(get_module(lm.model, path)))
    return HeadView(model=root, family=lm.family, config=lm.config)


class StreamingUnavailable(Exception):
    """The model's weights are not in local safetensors files that match its state dict."""


class CheckpointWeights(Mapping):
    """``{state-dict name: tensor}`` of a model, each tensor read from its checkpoint files on access."""

    def __init__(self, lm: LoadedModel):
        files = sorted(Path(lm.path).glob("*.safetensors")) if lm.path and not lm.adapter else []
        if not files:
            raise StreamingUnavailable(f"{lm.ref}: no local safetensors checkpoint (a hub id or a merged adapter)")
        where: dict[str, Path] = {}
        for f in files:
            with safe_open(str(f), "pt") as h:
                where.update(dict.fromkeys(h.keys(), f))
        state = resident_state_dict(lm.model)
        self._map: dict[str, tuple[Path, str, torch.dtype]] = {}
        ptr_key: dict[int, str] = {}
        for name, t in state.items():
            if name in where:
                ptr_key.setdefault(t.data_ptr(), name)
        unmatched = set(where) - set(state)
        for name, t in state.items():
            key = name if name in where else ptr_key.get(t.data_ptr())  # a tied weight saved once
            if key is None:  # a renamed key (e.g. GPT-NeoX's embed_out -> lm_head): the file tensor equal to it
                key = next((k for k in sorted(unmatched) if self._read(where[k], k, t.dtype).equal(t.cpu())), None)
            if key is None:
                raise StreamingUnavailable(f"{lm.ref}: parameter {name} is in no checkpoint file")
            self._map[name] = (where[key], key, t.dtype)

    @staticmethod
    def _read(file: Path, key: str, dtype: torch.dtype) -> torch.Tensor:
        with safe_open(str(file), "pt") as h:
            return h.get_tensor(key).to(dtype)

    def __getitem__(self, name: str) -> torch.Tensor:
        file, key, dtype = self._map[name]
        return self._read(file, key, dtype)

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._map)
