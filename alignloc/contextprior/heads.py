"""Which attention heads push the answer towards the context? Direct logit attribution, all heads at once.

Yu et al. (2023, "Characterizing Mechanisms for Factual Recall in Language Models") found heads
whose output favours the in-context answer over the remembered one, and raised in-context answers
by scaling such heads up. Here each head's direct effect on ``logit(target) - logit(foil)`` at the
last token is read from one forward pass per batch: the head's slice of the attention output
projection applied to its value mix, through the final norm (linearized at the run's own scale) and
the unembedding. Every layer and head of a batch comes from the same pass, so a 30 x 9 search
costs as much as one evaluation.
"""

from __future__ import annotations

from contextlib import ExitStack

import torch
from jaxtyping import Float

from alignloc.contextprior.evaluate import batches, first_token
from alignloc.models.families import block_module, get_module
from alignloc.models.hooks import hook_site
from alignloc.models.pair import LoadedModel


@torch.no_grad()
def head_attribution(model: LoadedModel, prompts: list, bos: bool) -> Float[torch.Tensor, "n layer head"]:
    """Per prompt, layer and head: the head's direct effect on ``logit(target) - logit(foil)`` at the last token."""
    cfg, fam = model.config, model.family
    n_layers, n_heads = cfg.num_hidden_layers, cfg.num_attention_heads
    d_head = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    norm = get_module(model.model, fam.final_norm)
    unembed = model.model.get_output_embeddings().weight  # [d_vocab, d_model]
    projs = [get_module(get_module(block_module(model.model, fam, layer), fam.attn), fam.attn_proj) for layer in range(n_layers)]
    out = []
    for b in batches(model, prompts, bos):
        got: dict[object, torch.Tensor] = {}  # layer -> heads' outputs before the projection [b, head*d_head]; "final"
        with ExitStack() as stack:
            for key, module in [*enumerate(projs), ("final", norm)]:
                stack.enter_context(hook_site(module, "in", _last_token_recorder(got, key, b.last)))
            model.model(input_ids=b.ids, attention_mask=b.mask, use_cache=False)
        z, x = got, got["final"]  # x: [b, d_model], the residual entering the final norm
        centred = getattr(norm, "bias", None) is not None  # LayerNorm centres; RMSNorm does not
        eps = float(getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6)))
        xc = x - x.mean(-1, keepdim=True) if centred else x
        scale = torch.rsqrt(xc.pow(2).mean(-1, keepdim=True) + eps)  # [b, 1]
        want = torch.tensor([first_token(model.tokenizer, p.target) for p in b.prompts])
        foil = torch.tensor([first_token(model.tokenizer, p.foil) for p in b.prompts])
        u = (unembed[want] - unembed[foil]).float() * norm.weight.float() * scale  # [b, d_model]
        per_layer = []
        for layer, proj in enumerate(projs):
            zh = z[layer].view(len(b.prompts), n_heads, d_head)  # [b, head, d_head]
            w_o = proj.weight.float().view(-1, n_heads, d_head)  # [d_model, head, d_head]
            heads_out = torch.einsum("bhk,dhk->bhd", zh, w_o)  # [b, head, d_model]
            if centred:
                heads_out = heads_out - heads_out.mean(-1, keepdim=True)
            per_layer.append(torch.einsum("bhd,bd->bh", heads_out, u))
        out.append(torch.stack(per_layer, 1))  # [b, layer, head]
    return torch.cat(out) if out else torch.zeros(0, n_layers, n_heads)


def _last_token_recorder(store: dict, key, last: torch.Tensor):
    """A hook function that keeps ``act[i, last[i]]`` (float) under ``store[key]`` and changes nothing."""
    def grab(act: torch.Tensor) -> None:
        store[key] = act[torch.arange(len(last)), last].float()
    return grab


def top_heads(scores: Float[torch.Tensor, "n layer head"], k: int) -> list[tuple[int, int]]:
    """The ``k`` (layer, head) pairs with the largest mean score over prompts, best first."""
    mean = scores.mean(0)  # [layer, head]
    idx = mean.flatten().topk(min(k, mean.numel())).indices
    return [(int(i) // mean.shape[1], int(i) % mean.shape[1]) for i in idx]
