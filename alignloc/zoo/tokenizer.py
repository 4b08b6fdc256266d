"""The zoo's word-level tokenizer: one token per word or punctuation run.

Why word level: every entity name and attribute value is exactly one token, so a fact is one
next-token prediction, a corrupted prompt (another entity) has the same token length, and targets
like ``" Lima"`` tokenize the same with or without the leading space. The vocabulary is the closed
word list of the world (plus the recipe phrases), so base and tuned models share it from the start.

Text is encoded with ``add_special_tokens=False`` and callers prepend ``<bos>`` themselves
(``encode``); the saved tokenizer adds no special tokens on its own.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")


def build_tokenizer(words: Sequence[str]) -> PreTrainedTokenizerFast:
    """A WordLevel tokenizer over ``words`` (specials first, then words in the given order)."""
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="right",
    )
    return tok


def encode(tok: PreTrainedTokenizerFast, texts: Sequence[str], bos: bool = True) -> list[list[int]]:
    """Token ids of each text, with ``<bos>`` prepended (no other special tokens)."""
    ids = tok(list(texts), add_special_tokens=False)["input_ids"]
    if tok.unk_token_id is not None:
        for text, row in zip(texts, ids):
            if tok.unk_token_id in row:
                raise ValueError(f"text has words outside the zoo vocabulary: {text!r}")
    head = [tok.bos_token_id] if bos else []
    return [head + row for row in ids]
