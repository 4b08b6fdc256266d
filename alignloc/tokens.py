"""Tokenize prompts the same way for both models, pad batches, and resolve position selectors.

Every backend receives the same id tensors. Batches are right-padded with an attention mask, so
that in a causal model each real token sees exactly what it would see alone: a batched capture
equals a one-by-one capture (absolute position embeddings included).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from alignloc.errors import UserError
from alignloc.prompts import Prompt
from alignloc.sites import Positions, SiteError

# Families whose reference tooling (TransformerLens adapters) prepends no BOS by default.
_NO_BOS_MODEL_TYPES = ("qwen2", "qwen3", "gpt_neox")


class PromptTooLongError(UserError, ValueError):
    """A prompt has more tokens than the model's context window."""


@dataclass(frozen=True)
class Encoded:
    """Token ids of each prompt (BOS included when used) and char offsets of each token."""

    ids: list[list[int]]
    offsets: list[list[tuple[int, int]]]
    bos: bool

    @property
    def lengths(self) -> list[int]:
        """Number of tokens of each prompt."""
        return [len(x) for x in self.ids]


def default_bos(tokenizer, model_type: str | None = None) -> bool:
    """Whether to prepend BOS: when the tokenizer has one and the family conventionally uses it."""
    return tokenizer.bos_token_id is not None and model_type not in _NO_BOS_MODEL_TYPES


def encode_prompts(
    tokenizer, prompts: list[Prompt], bos: bool, max_len: int | None = None, field: str = "text"
) -> Encoded:
    """Tokenize ``prompt.<field>`` of each prompt; prepend BOS if asked; check the context length."""
    texts = [getattr(p, field) for p in prompts]
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = [], []
    for p, x, off in zip(prompts, enc["input_ids"], enc["offset_mapping"]):
        x, off = list(x), [tuple(o) for o in off]
        if bos:
            x, off = [tokenizer.bos_token_id, *x], [(0, 0), *off]
        if not x:
            raise SiteError(f"prompt {p.id!r}: '{field}' tokenizes to no tokens (give it visible text)")
        if max_len is not None and len(x) > max_len:
            raise PromptTooLongError(
                f"prompt {p.id!r} has {len(x)} tokens, more than the model's context of {max_len} "
                "(shorten it or drop it from the prompt file)"
            )
        ids.append(x)
        offsets.append(off)
    return Encoded(ids=ids, offsets=offsets, bos=bos)


def pad_batch(ids: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to ``input_ids [batch, pos]`` and ``attention_mask [batch, pos]``."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
        mask[i, : len(x)] = 1
    return input_ids, mask


def pad_id(tokenizer) -> int:
    """The id used for padding (pad, else eos, else 0); never attended to."""
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0


def check_named_positions(prompts: list[Prompt], positions: Positions) -> None:
    """SiteError naming the first prompt that lacks a named position (before any tokenization)."""
    if positions.mode == "named":
        for p in prompts:
            if positions.name not in p.positions:
                raise SiteError(f"prompt {p.id!r} has no position named {positions.name!r} "
                                f"(it has: {', '.join(sorted(p.positions)) or 'none'}; add it to every prompt or use last)")


def _named_position(p: Prompt, name: str, offsets: list[tuple[int, int]], n: int) -> int:
    check_named_positions([p], Positions("named", name=name))
    pos = p.positions[name]
    if isinstance(pos, int):
        idx = pos + n if pos < 0 else pos
    else:
        start = p.text.index(pos)
        end = start + len(pos)
        hits = [i for i, (a, b) in enumerate(offsets) if b > a and a < end and b > start]
        if not hits:
            raise SiteError(f"prompt {p.id!r}: position {name!r} ({pos!r}) covers no token (name a longer substring)")
        idx = hits[-1]
    if not 0 <= idx < n:
        raise SiteError(f"prompt {p.id!r}: position {name!r} = {pos} is outside its {n} tokens (BOS included)")
    return idx


def resolve_positions(prompts: list[Prompt], enc: Encoded, positions: Positions) -> list[int]:
    """Token index kept for each prompt (``-1`` for every position when ``positions`` is all)."""
    out = []
    for p, x, off in zip(prompts, enc.ids, enc.offsets):
        n = len(x)
        if positions.mode == "all":
            out.append(-1)
        elif positions.mode == "last":
            out.append(n - 1)
        elif positions.mode == "index":
            idx = positions.index + n if positions.index < 0 else positions.index
            if not 0 <= idx < n:
                raise SiteError(f"prompt {p.id!r}: position {positions.index} is outside its {n} tokens "
                                "(choose an index every prompt has, or last)")
            out.append(idx)
        else:
            out.append(_named_position(p, positions.name, off, n))
    return out
