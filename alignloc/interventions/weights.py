"""Weight orthogonalization: the weight-space twin of ``Ablate`` (no hooks at run time).

Every matrix that writes into the residual stream at the chosen layers (attention and MLP output
projections, with their biases), and the token (and position) embeddings when layer 0 is chosen,
is replaced by its projection orthogonal to the direction. With ``layers`` that include 0 the
model computes exactly what ``Ablate(direction, layers)`` computes with hooks. Weights are
restored on exit; a tied unembedding is left untouched (the embedding gets its own copy).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from alignloc.interventions.directions import orthogonalize_cols, orthogonalize_rows, project_out
from alignloc.models.families import block_module, get_module
from alignloc.models.pair import LoadedModel


def _writers(model: LoadedModel, layers: list[int]) -> list[torch.nn.Module]:
    fam = model.family
    out = []
    for layer in layers:
        block = block_module(model.model, fam, layer)
        out.append(get_module(get_module(block, fam.attn), fam.attn_proj))
        out.append(get_module(get_module(block, fam.mlp), fam.mlp_proj))
    return out


@contextmanager
def orthogonalized(model: LoadedModel, direction: torch.Tensor, layers: list[int] | None = None) -> Iterator[LoadedModel]:
    """``model`` with ``direction`` removed from every residual-stream write of ``layers`` (all by default)."""
    if model.family.norm_after_sublayer:
        raise ValueError(f"{model.ref}: {model.config.model_type} normalises each sublayer's output before adding it "
                         "to the residual stream, so no weight edit removes a direction; use Ablate (hooks)")
    n = model.config.num_hidden_layers
    layers = sorted(range(n) if layers is None else layers)
    saved: list[tuple[torch.nn.Module, str, torch.nn.Parameter]] = []
    try:
        with torch.no_grad():
            for mod in _writers(model, layers):
                saved.append((mod, "weight", mod.weight))
                w = mod.weight
                # nn.Linear stores [out, in]; GPT-2's Conv1D stores [in, out]
                new = orthogonalize_rows(w, direction) if isinstance(mod, torch.nn.Linear) else orthogonalize_cols(w, direction)
                mod.weight = torch.nn.Parameter(new, requires_grad=w.requires_grad)
                if getattr(mod, "bias", None) is not None:
                    saved.append((mod, "bias", mod.bias))
                    mod.bias = torch.nn.Parameter(project_out(mod.bias, direction), requires_grad=mod.bias.requires_grad)
            if 0 in layers:
                embeds = [get_module(model.model, model.family.embed)]
                if model.family.name == "gpt2":
                    embeds.append(get_module(model.model, "transformer.wpe"))
                for emb in embeds:
                    saved.append((emb, "weight", emb.weight))
                    emb.weight = torch.nn.Parameter(orthogonalize_cols(emb.weight, direction), requires_grad=emb.weight.requires_grad)
        yield model
    finally:
        for mod, name, param in reversed(saved):
            setattr(mod, name, param)
