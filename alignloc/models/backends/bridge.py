"""The TransformerLens backend: a v4 ``TransformerBridge`` around a copy of the loaded model.

Canonical sites map one-to-one onto the bridge's hook names ``blocks.L.hook_<kind>``
(``resid_pre|resid_mid|resid_post|attn_out|mlp_out``). Checked against the per-family table of
``alignloc.models.families`` on gpt2, llama, qwen2, gemma2 and gpt_neox (max abs diff below
1e-7): in particular the bridge's gemma2 ``hook_attn_out``/``hook_mlp_out`` are the outputs of
``post_attention_layernorm``/``post_feedforward_layernorm``, what is added to the residual, as
in our table, so no site needs to be derived from others. Parallel-residual GPT-NeoX has no
``resid_mid`` and raises SiteError, as in every backend.

Raw weights: ``enable_compatibility_mode`` (which folds and centres weights) is never called.
The bridge replaces submodules of the model it is given, so it gets a deep copy of
``loaded.model`` (twice the memory) and ``loaded.model`` stays a plain HF model. Token tensors
are used as they are (the bridge adds no BOS to tensors); batches are right-padded and the
attention mask is passed through. ``run_with_cache`` is filtered to the requested hooks and
stops after the last requested layer.
"""

from __future__ import annotations

import copy

import torch

from alignloc.models.backends.base import CheckedRun
from alignloc.models.pair import LoadedModel
from alignloc.sites import Site


def hook_name(site: Site) -> str:
    """The TransformerBridge hook that holds ``site``, e.g. ``blocks.3.hook_resid_post``."""
    return f"blocks.{site.layer}.hook_{site.kind}"


def bridge_tokenizer(tokenizer):
    """A copy of ``tokenizer`` that ``boot_transformers`` accepts without touching the original.

    The boot normalises the tokenizer it is given in place (padding side, pad/bos tokens) and
    reloads it from ``init_kwargs["name_or_path"]`` with a BOS; an in-memory tokenizer has no
    such path (``KeyError: 'name_or_path'``). It is then marked as already adding BOS, so it is
    used as is. The bridge's tokenizer is never used on our token tensors.
    """
    tok = copy.deepcopy(tokenizer)
    if not tok.init_kwargs.get("name_or_path"):
        tok.init_kwargs["name_or_path"] = getattr(tok, "name_or_path", None) or "in-memory"
        tok.init_kwargs["add_bos_token"] = True
    return tok


class BridgeBackend(CheckedRun):
    """Record sites with ``TransformerBridge.run_with_cache`` on a private copy of the model."""

    name = "bridge"

    def __init__(self, loaded: LoadedModel):
        from transformer_lens.model_bridge import TransformerBridge

        self.loaded = loaded
        param = next(loaded.model.parameters())
        # The bridge swaps the HF model's submodules in place and forces eager attention.
        hf_model = copy.deepcopy(loaded.model)
        self.bridge = TransformerBridge.boot_transformers(
            loaded.path or loaded.ref,  # only recorded: config and tokenizer are given
            hf_model=hf_model,
            tokenizer=bridge_tokenizer(loaded.tokenizer),
            device=str(param.device),
            dtype=param.dtype,
        )
        self.bridge.eval()

    @torch.inference_mode()
    def _run(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, sites: list[Site]) -> dict[Site, torch.Tensor]:
        dev = self.bridge.cfg.device
        names = sorted({hook_name(s) for s in sites})
        _, cache = self.bridge.run_with_cache(
            input_ids.to(dev),
            attention_mask=attention_mask.to(dev),
            names_filter=names,
            stop_at_layer=max(s.layer for s in sites) + 1,  # blocks after the last site are skipped
        )
        return {s: cache[hook_name(s)].detach() for s in sites}
