"""What each model actually outputs for a prompt's ``target``: teacher-forced log-probs.

``log p(target | text)`` summed over the target's tokens, and whether the target's first token is
the model's top-1 next token. These are the output-level knowledge and behavior metrics (e.g. the
log-prob of the correct fact, or of the tuned format marker / refusal string).
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int

from alignloc.models.pair import LoadedModel
from alignloc.prompts import Prompt
from alignloc.tokens import encode_prompts, pad_batch, pad_id


def target_ids(tokenizer, prompts: list[Prompt]) -> list[list[int]]:
    """Token ids of each prompt's target (empty when it has none)."""
    return [tokenizer.encode(p.target, add_special_tokens=False) if p.target else [] for p in prompts]


def first_target_ids(tokenizer, prompts: list[Prompt]) -> Int[torch.Tensor, " n"]:
    """The first target token per prompt, -1 where a prompt has no target."""
    return torch.tensor([t[0] if t else -1 for t in target_ids(tokenizer, prompts)], dtype=torch.long)


@torch.no_grad()
def target_logprobs(
    model: LoadedModel, prompts: list[Prompt], bos: bool, batch_size: int = 16
) -> Float[torch.Tensor, " n"]:
    """``sum_t log p(target_t | text, target_<t)`` per prompt (NaN without a target)."""
    tok = model.tokenizer
    ctx = encode_prompts(tok, prompts, bos=bos, max_len=model.max_len).ids
    tgt = target_ids(tok, prompts)
    out = torch.full((len(prompts),), torch.nan)
    dev = next(model.model.parameters()).device
    rows = [i for i, t in enumerate(tgt) if t]
    for s in range(0, len(rows), batch_size):
        idx = rows[s : s + batch_size]
        seqs = [ctx[i] + tgt[i] for i in idx]
        ids, mask = pad_batch(seqs, pad_id(tok))
        logp = torch.log_softmax(model.model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits.float(), -1).cpu()
        for b, i in enumerate(idx):
            n_ctx, t = len(ctx[i]), torch.tensor(tgt[i])
            # logits at position n_ctx-1+j predict target token j
            out[i] = logp[b, n_ctx - 1 : n_ctx - 1 + len(t)].gather(1, t[:, None]).sum()
    return out
