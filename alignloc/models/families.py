"""Architectures as tables: where each canonical site lives in each Hugging Face family.

Every family maps the five site kinds to a module path inside one decoder block and to how the
value is read there (the module's output, or its first input). Adding a family is adding a row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from alignloc.sites import Site, SiteError

# (module path inside a block, "out" | "in"): "out" = the module's output (first element of a
# tuple), "in" = the module's first positional input. "" is the block itself.
Where = tuple[str, str]


@dataclass(frozen=True)
class Family:
    """Module paths of one architecture family."""

    name: str
    layers: str  # path of the ModuleList of blocks
    embed: str
    final_norm: str
    unembed: str
    sites: dict[str, Where]
    parallel_attr: str | None = None  # config flag that makes attn and MLP read the same input
    attn: str = "self_attn"
    mlp: str = "mlp"
    attn_proj: str = "o_proj"  # the attention's output projection, under ``attn`` (its input = concatenated heads)
    mlp_proj: str = "down_proj"  # the MLP's output projection, under ``mlp``
    norm_after_sublayer: bool = False  # True when attn/MLP outputs are normalised before the residual add
    model_types: tuple[str, ...] = field(default=())


_LLAMA_SITES = {
    "resid_pre": ("", "in"),
    "attn_out": ("self_attn", "out"),
    "resid_mid": ("post_attention_layernorm", "in"),
    "mlp_out": ("mlp", "out"),
    "resid_post": ("", "out"),
}
# Gemma 2/3 normalise each sub-block's output before adding it to the residual stream.
_GEMMA2_SITES = {
    "resid_pre": ("", "in"),
    "attn_out": ("post_attention_layernorm", "out"),
    "resid_mid": ("pre_feedforward_layernorm", "in"),
    "mlp_out": ("post_feedforward_layernorm", "out"),
    "resid_post": ("", "out"),
}

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "llama",
            layers="model.layers",
            embed="model.embed_tokens",
            final_norm="model.norm",
            unembed="lm_head",
            sites=_LLAMA_SITES,
            model_types=("llama", "mistral", "qwen2", "qwen3", "gemma", "olmo2", "phi3", "granite"),
        ),
        Family(
            "gemma2",
            layers="model.layers",
            embed="model.embed_tokens",
            final_norm="model.norm",
            unembed="lm_head",
            sites=_GEMMA2_SITES,
            norm_after_sublayer=True,
            model_types=("gemma2", "gemma3_text"),
        ),
        Family(
            "gpt2",
            layers="transformer.h",
            embed="transformer.wte",
            final_norm="transformer.ln_f",
            unembed="lm_head",
            sites={
                "resid_pre": ("", "in"),
                "attn_out": ("attn", "out"),
                "resid_mid": ("ln_2", "in"),
                "mlp_out": ("mlp", "out"),
                "resid_post": ("", "out"),
            },
            attn="attn",
            attn_proj="c_proj",
            mlp_proj="c_proj",
            model_types=("gpt2",),
        ),
        Family(
            "gpt_neox",
            layers="gpt_neox.layers",
            embed="gpt_neox.embed_in",
            final_norm="gpt_neox.final_layer_norm",
            unembed="lm_head",
            sites={
                "resid_pre": ("", "in"),
                "attn_out": ("attention", "out"),
                "resid_mid": ("post_attention_layernorm", "in"),
                "mlp_out": ("mlp", "out"),
                "resid_post": ("", "out"),
            },
            parallel_attr="use_parallel_residual",
            attn="attention",
            attn_proj="dense",
            mlp_proj="dense_4h_to_h",
            model_types=("gpt_neox",),
        ),
    )
}

_BY_MODEL_TYPE = {mt: f for f in FAMILIES.values() for mt in f.model_types}


def family_for(config) -> Family:
    """The Family of a HF config, or a SiteError naming the model type and the supported ones."""
    mt = getattr(config, "model_type", None)
    if mt in _BY_MODEL_TYPE:
        return _BY_MODEL_TYPE[mt]
    raise SiteError(
        f"model type {mt!r} has no site table; supported: {', '.join(sorted(_BY_MODEL_TYPE))}. "
        "Add a row to alignloc.models.families.FAMILIES, or use --backend bridge."
    )


def is_parallel(family: Family, config) -> bool:
    """True when attention and MLP read the same residual (GPT-NeoX/Pythia): no resid_mid."""
    return bool(family.parallel_attr and getattr(config, family.parallel_attr, False))


def check_site(family: Family, config, site: Site) -> None:
    """Raise SiteError if ``site`` does not exist in a model of this family and config."""
    n_layers = config.num_hidden_layers
    if site.layer >= n_layers:
        raise SiteError(f"site {site} is out of range: the model has {n_layers} layers")
    if site.kind == "resid_mid" and is_parallel(family, config):
        raise SiteError(
            f"site {site}: {config.model_type} uses parallel attention and MLP, so there is no "
            "resid_mid; use resid_pre, attn_out, mlp_out or resid_post"
        )


def get_module(root: torch.nn.Module, path: str) -> torch.nn.Module:
    """The submodule at a dotted path ('' is root); numeric parts index ModuleLists."""
    mod = root
    for part in filter(None, path.split(".")):
        mod = mod[int(part)] if part.isdigit() else getattr(mod, part)
    return mod


def block_module(model: torch.nn.Module, family: Family, layer: int) -> torch.nn.Module:
    """Decoder block ``layer`` of a HF causal LM."""
    return get_module(model, family.layers)[layer]


def site_module(model: torch.nn.Module, family: Family, site: Site) -> tuple[torch.nn.Module, str]:
    """(module, "in" | "out") where ``site`` is read in ``model``."""
    sub, io = family.sites[site.kind]
    return get_module(block_module(model, family, site.layer), sub), io
