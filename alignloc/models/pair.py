"""Load a base/post-trained pair, check that the two sides are comparable, and hash them.

``load_pair(base, tuned)`` accepts local HF directories, hub ids, ``zoo:NAME`` and a peft LoRA
adapter directory as the tuned side (merged onto the base). Weights are never transformed
(no folding or centring): what is compared is what was trained. A ``LoadOptions`` (or its fields
as keywords) says how: its ``device``, ``compute_dtype`` and ``device_map`` place them
(``alignloc.models.placement``): loaded straight onto the device in the compute dtype, or sharded by
accelerate.
"""

from __future__ import annotations

import ctypes
import gc
import hashlib
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from alignloc.errors import UserError, one_line
from alignloc.models.families import Family, family_for
from alignloc.models.linear import use_packed_linears
from alignloc.models.load_options import LoadOptions
from alignloc.models.loading import load_causal_lm
from alignloc.models.placement import (
    Placement,
    input_device,
    resident_state_dict,
    resolve_placement,
)
from alignloc.models.refs import (
    ModelRefError,
    Ref,
    adapter_view,
    resolve_ref,
    split_zoo,
    zoo_ref,
    zoo_resolver,
)

log = logging.getLogger(__name__)
SIDES = ("base", "tuned")


class PairMismatchError(UserError, ValueError):
    """Base and tuned models cannot be compared; the message says which property differs."""


@dataclass(eq=False)
class LoadedModel:
    """A HF causal LM in eval mode with its tokenizer, site table and provenance.

    ``release()`` frees the weights (an analysis that needs one model at a time calls it after its
    turn); the next use of ``model`` reloads them with ``loader``. Config, hash and dtype stay.
    """

    ref: str
    model: torch.nn.Module = field(repr=False, compare=False)
    tokenizer: object = field(repr=False, compare=False)
    family: Family = field(repr=False)
    path: str | None = None
    adapter: str | None = None
    meta: dict = field(default_factory=dict)
    _hash: str | None = None
    loader: Callable[[], torch.nn.Module] | None = field(default=None, repr=False, compare=False)

    @property
    def config(self):
        """The HF config."""
        return self._config

    @property
    def resident(self) -> bool:
        """Whether the weights are in memory now (False after ``release()`` until the next use)."""
        return self._model is not None

    @property
    def vocab_rows(self) -> int:
        """Rows of the input embedding."""
        return self._rows

    def release(self) -> None:
        """Free the weights now (hash computed first); ``model`` reloads them when next used."""
        if self.loader is None:
            raise RuntimeError(f"{self.ref}: this model has no loader, so releasing it would lose it")
        if self._model is None:
            return
        self.weights_hash  # noqa: B018 (computed while the weights are here)
        self._model = None
        gc.collect()
        _give_back_freed_memory()

    @property
    def n_layers(self) -> int:
        """Number of decoder blocks."""
        return int(self.config.num_hidden_layers)

    @property
    def d_model(self) -> int:
        """Residual stream width."""
        return int(self.config.hidden_size)

    @property
    def device(self) -> torch.device:
        """Where inputs go (the embedding's device; the first shard of a device map)."""
        return input_device(self.model)

    @property
    def max_len(self) -> int | None:
        """Longest sequence the model accepts (None if its config does not say)."""
        return getattr(self.config, "max_position_embeddings", None)

    @property
    def weights_hash(self) -> str:
        """sha256 over parameter names and raw bytes (computed once)."""
        if self._hash is None:
            self._hash = state_dict_hash(resident_state_dict(self.model))
        return self._hash

    def provenance(self) -> dict:
        """What a manifest or report records about this model."""
        return {
            "ref": self.ref,
            "path": self.path,
            "adapter": self.adapter,
            "model_type": self.config.model_type,
            "family": self.family.name,
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            "dtype": str(self._dtype).removeprefix("torch."),
            "weights_sha256": self.weights_hash,
            "tokenizer_sha256": tokenizer_hash(self.tokenizer),
            **self.meta,
        }


def _give_back_freed_memory() -> None:
    """Return freed memory to the system: CUDA's cache, and glibc's heap (which otherwise keeps the
    freed weights' pages, so the process's RSS would not fall)."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (e.g. musl)
            pass


def _get_model(self: LoadedModel) -> torch.nn.Module:
    if self._model is None:
        log.info("loading %s again (it was released)", self.ref)
        self.model = self.loader()
    return self._model


def _set_model(self: LoadedModel, model: torch.nn.Module) -> None:
    use_packed_linears(model)  # float32 on the CPU: oneDNN's packed kernel, the same products faster
    self._model = model
    self._config = model.config
    self._dtype = next(model.parameters()).dtype
    self._rows = int(model.get_input_embeddings().weight.shape[0])


LoadedModel.model = property(_get_model, _set_model, doc="The HF model (loaded again on use after ``release()``).")


@dataclass
class ModelPair:
    """Base and tuned models that share tokenizer vocabulary, width and depth."""

    base: LoadedModel
    tuned: LoadedModel
    name: str | None = None
    ground_truth: dict | None = None
    zoo_size: str | None = None  # the zoo size of a ``zoo:NAME[@SIZE]`` pair (its control comes from the same size)

    def side(self, name: str) -> LoadedModel:
        """The model of side ``base`` or ``tuned``."""
        if name not in SIDES:
            raise ValueError(f"side must be 'base' or 'tuned', got {name!r}")
        return self.base if name == "base" else self.tuned

    @property
    def tokenizer(self):
        """The (shared) tokenizer; both sides are checked to have the same vocabulary."""
        return self.base.tokenizer

    @property
    def n_layers(self) -> int:
        """Number of decoder blocks (equal on both sides)."""
        return self.base.n_layers


def state_dict_hash(state: dict[str, torch.Tensor]) -> str:
    """sha256 of parameter names, shapes, dtypes and bytes, in sorted-name order."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())  # the buffer itself: no copy of a large tensor
    return h.hexdigest()


def tokenizer_hash(tokenizer) -> str:
    """sha256 of the sorted vocabulary and special tokens (stable across save/load)."""
    h = hashlib.sha256()
    for tok, idx in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]):
        h.update(f"{idx}\t{tok}\n".encode())
    h.update(repr(sorted((k, str(v)) for k, v in tokenizer.special_tokens_map.items())).encode())
    return h.hexdigest()[:16]


def _from_pretrained(ref: Ref, place: Placement, opts: LoadOptions, attn: str | None):
    """The model and tokenizer of ``ref``; weights that do not match config.json are an error (``models.loading``)."""
    kwargs = dict(trust_remote_code=opts.trust_remote_code, use_safetensors=None if opts.allow_pickle else True,
                  **place.from_pretrained_kwargs())
    if attn:
        kwargs["attn_implementation"] = attn
    return load_causal_lm(ref, kwargs, opts.trust_remote_code)


def load_model(ref: str, options: LoadOptions | None = None, **keywords: Any) -> LoadedModel:
    """Load one causal LM from a local directory, hub id or ``zoo:NAME[@SIZE][:base|tuned]``.

    ``options``: a :class:`LoadOptions` (device, compute_dtype, device_map, offload_folder, allow_pickle,
    trust_remote_code, attn_implementation); ``keywords``: the same fields, replacing those of ``options``
    (``load_model(ref, device="cpu")``). ``device``: auto | cpu | cuda | cuda:N | mps; ``compute_dtype``:
    auto | float32 | bfloat16 | float16 (auto: bf16 on a GPU, fp32 on cpu); ``device_map``: an accelerate
    map (auto, balanced, sequential, or ``{module: device}``) that shards the model, ``offload_folder`` for
    its disk part.
    """
    opts = LoadOptions.build(options, **keywords)
    return _load(ref, _placement(opts), opts)


def _placement(opts: LoadOptions) -> Placement:
    return resolve_placement(opts.device, opts.compute_dtype, opts.device_map, opts.offload_folder)


def _load(ref: str, place: Placement, opts: LoadOptions) -> LoadedModel:
    zoo = split_zoo(ref)
    if zoo is not None:
        entry = zoo_resolver(ref).resolve(zoo.name, size=zoo.size)
        side = zoo.side or ("tuned" if entry.tuned is not None else "base")
        path = entry.tuned if side == "tuned" else entry.base
        if path is None:
            raise ModelRefError(f"{ref}: {zoo.name} is a base model and has no tuned side (use "
                                f"{zoo_ref(zoo.name, 'base', zoo.size)})")
        lm = _load(str(path), place, opts.replace(allow_pickle=False, trust_remote_code=False))  # the zoo's own files
        lm.ref, lm.meta = ref, {"zoo": zoo.name, "side": side}  # the ref names the size (zoo:NAME@SIZE)
        return lm
    r = resolve_ref(ref, opts.allow_pickle)
    if r.is_adapter:
        raise ModelRefError(
            f"{ref}: is a peft adapter (load it as the tuned side of a pair, load_pair(base, adapter_dir), "
            "so that it is merged onto its base)"
        )
    attn = opts.attn_implementation
    if attn is None and place.cpu_only:
        # torch's CPU SDPA kernel was 50-70x slower than eager attention on small models with 2
        # threads here (0.29 s vs 4 ms per forward); eager gives the same activations (atol 1e-6).
        attn = "eager"
    model, tok = _from_pretrained(r, place, opts, attn)
    return LoadedModel(ref=ref, model=model, tokenizer=tok, family=family_for(model.config),
                       path=r.location if r.kind == "local" else None,
                       loader=lambda: _from_pretrained(r, place, opts, attn)[0])


def _merge_adapter(base: LoadedModel, adapter_dir: str, source: str, place: Placement, opts: LoadOptions) -> LoadedModel:
    """A fresh copy of the base with the LoRA adapter merged into its weights."""
    from peft import PeftModel

    fresh = _load(base.ref, place, opts)
    try:
        with adapter_view(adapter_dir, opts.allow_pickle) as view:  # without pickle, peft sees only the safe files
            merged = PeftModel.from_pretrained(fresh.model, view).merge_and_unload()
    except Exception as e:  # peft raises many types for a wrong base
        raise PairMismatchError(f"{source}: cannot merge this adapter onto base {base.ref}: {one_line(e)[:500]} "
                                "(give the adapter's own base model)") from e
    return LoadedModel(ref=source, model=merged.eval(), tokenizer=fresh.tokenizer, family=fresh.family,
                       path=fresh.path, adapter=adapter_dir,
                       loader=lambda: _merge_adapter(base, adapter_dir, source, place, opts).model)


def check_pair(base: LoadedModel, tuned: LoadedModel) -> None:
    """Raise PairMismatchError naming the first property in which the two models differ."""
    checks = [
        ("architecture (model_type)", base.config.model_type, tuned.config.model_type),
        ("layer count", base.n_layers, tuned.n_layers),
        ("d_model (hidden_size)", base.d_model, tuned.d_model),
        ("embedding rows (vocab_size)", base.vocab_rows, tuned.vocab_rows),
    ]
    for what, b, t in checks:
        if b != t:
            raise PairMismatchError(
                f"base and tuned differ in {what}: base {base.ref} has {b}, tuned {tuned.ref} has {t} "
                "(alignloc compares a model with its own post-trained variant: pass a matching pair)"
            )
    bv, tv = base.tokenizer.get_vocab(), tuned.tokenizer.get_vocab()
    if bv != tv:
        only_b = len(set(bv) - set(tv))
        only_t = len(set(tv) - set(bv))
        moved = sum(1 for k in set(bv) & set(tv) if bv[k] != tv[k])
        raise PairMismatchError(
            f"base and tuned differ in tokenizer vocabulary: {only_b} tokens only in base "
            f"{base.ref}, {only_t} only in tuned {tuned.ref}, {moved} with different ids "
            "(both models must read the same token ids: pass a matching pair)"
        )


def load_pair(
    base: str,
    tuned: str | LoadOptions | None = None,
    options: LoadOptions | None = None,
    *,
    one_at_a_time: bool = False,
    **keywords: Any,
) -> ModelPair:
    """Load and check a base/tuned pair; ``load_pair("zoo:NAME")`` loads an organism's two sides.

    ``options`` and ``keywords`` as in :func:`load_model` (a :class:`LoadOptions`, or its fields as
    keywords; ``load_pair("zoo:NAME", options)`` takes it in the place of ``tuned``); both sides get the
    same placement. ``one_at_a_time``: the base is released
    (``LoadedModel.release``) before the tuned model is loaded, so only one model is ever in memory; it
    loads again when first used.
    """
    if isinstance(tuned, LoadOptions) and options is None:  # load_pair("zoo:NAME", opts): no tuned side given
        tuned, options = None, tuned
    opts = LoadOptions.build(options, **keywords)
    place = _placement(opts)
    name = ground_truth = size = None
    zoo = split_zoo(base)
    if tuned is None:
        if zoo is None or zoo[1] is not None:
            raise ModelRefError(f"{base}: a tuned model is needed (only zoo:NAME names both sides)")
        entry = zoo_resolver(base).resolve(zoo.name, size=zoo.size)
        if entry.tuned is None:
            raise ModelRefError(f"{base}: {zoo.name} is a base model (name an organism, e.g. zoo:chat-sft-upper)")
        base, tuned = zoo_ref(zoo.name, "base", zoo.size), zoo_ref(zoo.name, "tuned", zoo.size)
        name, ground_truth, size = zoo.name, entry.ground_truth, zoo.size
    b = _load(base, place, opts)
    if one_at_a_time:
        b.release()
    if split_zoo(tuned) is None and resolve_ref(tuned, opts.allow_pickle).is_adapter:
        t = _merge_adapter(b, resolve_ref(tuned, opts.allow_pickle).location, tuned, place, opts)
    else:
        t = _load(tuned, place, opts)
    check_pair(b, t)
    return ModelPair(base=b, tuned=t, name=name, ground_truth=ground_truth, zoo_size=size)
