"""``from_pretrained`` with its two silent failures made loud: weights that do not fit config.json, and a pickle.

transformers loads a checkpoint whose weights do not match its config.json without an error: a
tensor the model needs but the file lacks (config.json says 3 layers, the weights hold 2) is
randomly initialised, and a tensor the model has no place for is dropped. Both would be compared
as if trained, so ``load_causal_lm`` asks for the loading info and refuses either, naming a few
tensors and their count. Known benign ones are left out: buffers that are recomputed (rotary
``inv_freq``, ``position_ids``, GPT-2's causal ``attn.bias``) and an output embedding tied to the
input one. (transformers already leaves out what a model declares ignorable.)

With ``allow_pickle``, a ``.bin`` checkpoint is still read by torch's weights-only unpickler,
which refuses any global or opcode outside its allowlist; that refusal becomes one line naming
what was refused and what to do, without torch's warnings or its multi-paragraph advice.
"""

from __future__ import annotations

import pickle
import re
import warnings

from alignloc.errors import one_line
from alignloc.models.refs import ModelRefError, Ref

_BENIGN = re.compile(r"(^|\.)(inv_freq|position_ids|masked_bias|attn\.bias)$")
_SHOW = 3  # tensor names shown in a message


def load_causal_lm(ref: Ref, kwargs: dict, trust_remote_code: bool):
    """``(model in eval mode, tokenizer)`` of ``ref``; a ModelRefError for anything wrong with the user's files."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        with warnings.catch_warnings():  # torch's unpickler warns about pickle protocols before refusing one
            warnings.filterwarnings("ignore", module=r"torch\.")
            model, info = AutoModelForCausalLM.from_pretrained(ref.location, output_loading_info=True, **kwargs)
        tok = AutoTokenizer.from_pretrained(ref.location, trust_remote_code=trust_remote_code)
    except Exception as e:  # any failure to load the user's files is theirs to fix: one line, not a traceback
        refused = pickle_refusal(e)
        if refused is not None:
            raise ModelRefError(f"{ref.source}: {_pickle_file(ref)}torch's weights-only unpickler refused it: {refused} "
                                "(a pickle can run arbitrary code, so even with --allow-pickle alignloc reads one only "
                                "through that unpickler: convert the checkpoint to safetensors in an environment you "
                                "trust, with save_pretrained(dir, safe_serialization=True), or do not load it)") from None
        raise ModelRefError(f"{ref.source}: could not load as a Hugging Face causal LM: {type(e).__name__}: "
                            f"{one_line(e)[:500]} (check that the directory is a complete checkpoint)") from e
    check_loading_info(ref.source, model, info)
    return model.eval(), tok


def _names(keys: list[str]) -> str:
    more = f" and {len(keys) - _SHOW} more" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def _tied(model, key: str) -> bool:
    """Whether ``key`` is the output embedding and the model ties it to the input embedding."""
    out = model.get_output_embeddings()
    if out is None or not key.endswith("lm_head.weight"):
        return False
    return bool(getattr(model.config, "tie_word_embeddings", False)) or out.weight is model.get_input_embeddings().weight


def unmatched(model, info: dict) -> tuple[list[str], list[str]]:
    """The (missing, unexpected) tensor names of ``from_pretrained``'s loading info, benign ones left out."""
    missing = sorted(k for k in info.get("missing_keys") or () if not _BENIGN.search(k) and not _tied(model, k))
    unexpected = sorted(k for k in info.get("unexpected_keys") or () if not _BENIGN.search(k))
    return missing, unexpected


def check_loading_info(source: str, model, info: dict) -> None:
    """ModelRefError unless every tensor the model needs came from the checkpoint and every tensor there was used."""
    missing, unexpected = unmatched(model, info)
    if not missing and not unexpected:
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} tensors the model needs are missing from the checkpoint ({_names(missing)}) and "
                     "would be randomly initialised")
    if unexpected:
        parts.append(f"{len(unexpected)} tensors in the checkpoint are not used by the model ({_names(unexpected)})")
    n = getattr(model.config, "num_hidden_layers", None)
    says = f"config.json says {n} layers; " if isinstance(n, int) else ""
    raise ModelRefError(f"{source}: the weights do not match config.json: {'; '.join(parts)} ({says}fix config.json, or "
                        "re-save the model with save_pretrained)")


def _pickle_file(ref: Ref) -> str:
    """``'pytorch_model.bin: '``: the pickle the loader reads in ``ref`` (empty for a hub id)."""
    if ref.kind == "hub":
        return ""
    from pathlib import Path

    from alignloc.models.refs import loader_files

    pickles = [f for f in loader_files(Path(ref.location), allow_pickle=True) if not f.endswith(".safetensors")]
    return f"{pickles[0]}: " if pickles else ""


def pickle_refusal(e: BaseException) -> str | None:
    """What torch's weights-only unpickler refused, from the exception chain of a load (None if it was not that)."""
    while e is not None:
        text = str(e)
        if isinstance(e, pickle.UnpicklingError) and "Weights only load failed" in text:
            return _refused(text)
        e = e.__cause__ or e.__context__
    return None


def _refused(text: str) -> str:
    """The refused global, call, class or opcode named in torch's message (its first sentence otherwise)."""
    for pattern, what in ((r"GLOBAL (\S+?)[ ,]", "it names the global {}, which is not on its allowlist"),
                          (r"reduce for unrecognized function (.+?)(?: which belongs|\n|$)", "it calls {}, which is not "
                           "on its allowlist"),
                          (r"create new object .* but got (.+?)(?:\n|$)", "it builds an object of {}, which is not on "
                           "its allowlist"),
                          (r"Unsupported operand (\d+)", "it uses pickle opcode {}, which that unpickler does not "
                           "support")):
        m = re.search(pattern, text)
        if m:
            return what.format(m.group(1).rstrip("."))
    return "it holds something outside the unpickler's allowlist"
