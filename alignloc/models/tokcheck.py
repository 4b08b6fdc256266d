"""Do several models share one tokenizer? Decided from the tokenizers alone, before any model is built or loaded.

Proxy-tuning adds the logits of three or four models, so they must read and write the same token
ids; finding out after a zoo model was trained for minutes, or a large model loaded, is too late.
``check_shared_tokenizer`` reads only tokenizer files: a local or hub model's own, a built zoo
model's from disk, and an unbuilt tiny/small zoo model's from the zoo's recipe (its word list, the
same tokenizer the build would save). A tokenizer it cannot get cheaply (an unbuilt real-tier model,
a peft adapter folder) is left to the check made after loading.
"""

from __future__ import annotations

from alignloc.errors import one_line
from alignloc.models.pair import PairMismatchError, tokenizer_hash
from alignloc.models.refs import ModelRefError, resolve_ref, split_zoo, zoo_resolver


def _zoo_tokenizer(name: str, side: str | None, size: str):
    """A zoo model's tokenizer: from disk when built, else as the build would make it (None if neither is cheap)."""
    from transformers import AutoTokenizer

    zoo = zoo_resolver(f"zoo:{name}")
    try:
        entry = zoo.resolve(name, size=size, build_missing=False)
    except FileNotFoundError:
        return zoo.recipe_tokenizer(name, size)
    return AutoTokenizer.from_pretrained(entry.tuned if entry.tuned is not None and side != "base" else entry.base)


def tokenizer_only(ref: str, allow_pickle: bool = False, trust_remote_code: bool = False):
    """The tokenizer of model ``ref`` without its weights (None when it cannot be had without loading the model)."""
    from transformers import AutoTokenizer

    zoo = split_zoo(ref)
    if zoo is not None:
        return _zoo_tokenizer(zoo.name, zoo.side, zoo.size)
    r = resolve_ref(ref, allow_pickle)
    if r.is_adapter:  # merged onto its base when loaded: the base's tokenizer
        return None
    try:
        return AutoTokenizer.from_pretrained(r.location, trust_remote_code=trust_remote_code)
    except Exception as e:  # the user's files: one line
        raise ModelRefError(f"{ref}: cannot read its tokenizer: {type(e).__name__}: {one_line(e)[:300]} "
                            "(check that the directory is a complete checkpoint)") from e


def check_shared_tokenizer(models: dict[str, str | None], allow_pickle: bool = False, trust_remote_code: bool = False,
                           purpose: str = "proxy-tuning needs one vocabulary for all its models") -> None:
    """PairMismatchError naming the first of ``models`` ({label: ref}, e.g. ``{"--large-base": "zoo:base-large"}``)
    whose tokenizer differs from the first one's; models given as None, or whose tokenizer is not cheap, are skipped."""
    first = None
    for label, ref in models.items():
        tok = tokenizer_only(ref, allow_pickle, trust_remote_code) if ref is not None else None
        if tok is None:
            continue
        if first is None:
            first = (label, ref, tok, tokenizer_hash(tok))
        elif tokenizer_hash(tok) != first[3]:
            raise PairMismatchError(
                f"{label} {ref}: its tokenizer differs from that of {first[0]} {first[1]} ({len(tok)} tokens vs "
                f"{len(first[2])}) ({purpose}: pass models of one family)"
            )
