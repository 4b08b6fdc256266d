"""Model references: a local HF directory, a hub id, or ``zoo:NAME[@SIZE][:base|tuned]``.

Resolving a reference never loads weights; it checks that what is there can be loaded safely
(safetensors only, unless pickle is explicitly allowed) and fails fast when offline.

``zoo:NAME`` names a model organism of ``alignloc.zoo`` (``zoo:NAME@small``: of another zoo size than the
default ``tiny``; an unknown size is an error naming the sizes the registered zoo has), which sits above ``models/`` (it trains
with them), so ``models/`` never imports it: the zoo registers a ``ZooResolver`` here when it is
imported (``register_zoo_resolver``), and every ``zoo:`` reference goes through ``zoo_resolver()``.
The command line and ``alignloc.experiments`` import the zoo; library code that takes ``zoo:NAME``
works once anything has imported ``alignloc.zoo``.
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from alignloc.errors import UserError
from alignloc.textio import parse_json, read_json


class ModelRefError(UserError, ValueError):
    """A model reference cannot be resolved or loaded; the message says what to do."""


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class Ref:
    """A resolved reference: ``kind`` is ``local`` | ``adapter`` | ``hub``; ``source`` as given."""

    source: str
    kind: str
    location: str  # a directory for local/adapter, the repo id for hub

    @property
    def is_adapter(self) -> bool:
        """True for a peft LoRA adapter directory (merged onto the pair's base when loaded)."""
        return self.kind == "adapter"


def offline() -> bool:
    """True when the environment asks for offline mode (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _hub_reachable(timeout: float = 3.0) -> bool:
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("//")[-1].split("/")[0]
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


SAFE_MODEL = ("model.safetensors", "model.safetensors.index.json")  # what transformers reads first, in order
PICKLE_MODEL = ("pytorch_model.bin", "pytorch_model.bin.index.json")  # what it reads otherwise (pickle)
SAFE_ADAPTER, PICKLE_ADAPTER = "adapter_model.safetensors", "adapter_model.bin"  # what peft reads, in order
_MAX_HEADER = 100 * 2**20  # safetensors' own limit on the JSON header


def _is_safe_name(name: str) -> bool:
    return name.endswith((".safetensors", ".safetensors.index.json"))


def _shards(index: Path) -> list[str]:
    """The shard file names a ``*.index.json`` names (plain names inside its folder only)."""
    data = read_json(index, ModelRefError, "weight index", "re-save the checkpoint")
    wmap = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(wmap, dict) or not wmap or not all(isinstance(v, str) for v in wmap.values()):
        raise ModelRefError(f"{index}: not a weight index (no 'weight_map' of tensor -> file) (re-save the checkpoint)")
    names = sorted(set(wmap.values()))
    bad = [n for n in names if Path(n).name != n or n in (".", "..")]
    if bad:
        raise ModelRefError(f"{index}: names shard {bad[0]!r} outside its folder (re-save the checkpoint)")
    return names


def read_config(directory: Path, name: str = "config.json") -> dict:
    """``directory/name`` as a JSON object (a ModelRefError naming the file otherwise)."""
    data = read_json(directory / name, ModelRefError, name, "re-download or re-save the checkpoint")
    if not isinstance(data, dict):
        raise ModelRefError(f"{directory / name}: not a JSON object (re-download or re-save the checkpoint)")
    return data


def loader_files(directory: Path, adapter: bool = False, allow_pickle: bool = False) -> list[str]:
    """The weight files transformers (or peft, for an ``adapter``) would read from ``directory``, in its order.

    Mirrors the loaders: an explicit ``transformers_weights`` in config.json, then ``model.safetensors``,
    its sharded index, and (only when pickle is allowed) ``pytorch_model.bin`` and its index; peft reads
    ``adapter_model.safetensors``, else ``adapter_model.bin``. Other files, ``*.safetensors`` included,
    are never read. Index files are followed to their shards.
    """
    if adapter:
        order = [SAFE_ADAPTER, PICKLE_ADAPTER]
    else:
        cfg = directory / "config.json"
        explicit = read_config(directory).get("transformers_weights") if cfg.is_file() else None
        if isinstance(explicit, str):
            if Path(explicit).name != explicit:
                raise ModelRefError(f"{cfg}: 'transformers_weights' names {explicit!r}, outside the folder (fix config.json)")
            order = [explicit]
        else:
            order = list(SAFE_MODEL) + (list(PICKLE_MODEL) if allow_pickle else [])
    for name in order:
        if (directory / name).is_file():
            return [name, *_shards(directory / name)] if name.endswith(".index.json") else [name]
    return []


def check_safetensors(path: Path) -> None:
    """ModelRefError unless ``path`` has a readable safetensors header whose tensors fit in the file."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 2 <= n <= min(_MAX_HEADER, size - 8):
            raise ModelRefError(f"{path}: not a safetensors file, or truncated ({size} bytes) (re-download or re-save it)")
        header = parse_json(f.read(n).decode("utf-8", "replace"), str(path), ModelRefError, "re-download or re-save it")
    if not isinstance(header, dict):
        raise ModelRefError(f"{path}: the safetensors header is not a JSON object (re-download or re-save it)")
    ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__" and isinstance(t, dict)
            and isinstance(t.get("data_offsets"), list) and len(t["data_offsets"]) == 2
            and isinstance(t["data_offsets"][1], int)]
    if max(ends, default=0) > size - 8 - n:
        raise ModelRefError(f"{path}: truncated: its header needs {max(ends) + 8 + n} bytes, the file has {size} "
                            "(re-download or re-save it)")


def check_weights_safe(directory: Path, allow_pickle: bool, what: str = "checkpoint") -> list[str]:
    """Decide by the files the loader would actually read: refuse pickle unless ``allow_pickle``, check headers.

    Returns those files. A stray ``*.safetensors`` next to a pickle that the loader would read does
    not make the folder safe.
    """
    adapter = what == "peft adapter"
    files = loader_files(directory, adapter, allow_pickle=True)
    pickles = [f for f in files if not _is_safe_name(f)]
    ignored = sorted(p.name for p in directory.glob("*.safetensors") if p.name not in files)
    if pickles and not allow_pickle:
        unread = f"; {', '.join(ignored)} would not be read" if ignored else ""
        raise ModelRefError(
            f"{directory}: the {what} loader would read pickle weights ({', '.join(pickles)}{unread}). Loading a "
            "pickle can run arbitrary code, so alignloc refuses it (convert it to safetensors with "
            "save_pretrained(dir, safe_serialization=True) on a trusted machine, or pass --allow-pickle "
            "(allow_pickle=True) if you trust its source)"
        )
    if not files:
        expected = (SAFE_ADAPTER, PICKLE_ADAPTER) if adapter else (*SAFE_MODEL, *PICKLE_MODEL)
        raise ModelRefError(f"{directory}: no weights this {what} loader reads (it looks for {', '.join(expected)}; "
                            "save the model with save_pretrained)")
    for name in files:
        if not (directory / name).is_file():
            raise ModelRefError(f"{directory}: weight file {name} is missing (re-download or re-save the checkpoint)")
        if name.endswith(".safetensors"):
            check_safetensors(directory / name)
    return files


@contextmanager
def adapter_view(directory: str | Path, allow_pickle: bool) -> Iterator[str]:
    """The folder peft should load: without pickle, a temporary view holding only the config and the safetensors.

    peft has no switch to refuse pickle, so it is shown only the files it may read; the decision
    (``check_weights_safe``) and the load cannot disagree.
    """
    if allow_pickle:
        yield str(directory)
        return
    with tempfile.TemporaryDirectory(prefix="alignloc-adapter-") as tmp:
        for name in ("adapter_config.json", SAFE_ADAPTER):
            os.symlink(Path(directory, name).resolve(), Path(tmp, name))
        yield tmp


def resolve_ref(source: str, allow_pickle: bool = False) -> Ref:
    """Classify and check a model reference (local dir, adapter dir, or hub id); zoo refs excluded."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelRefError(f"{source}: is a file (give a Hugging Face model directory, a hub id or zoo:NAME)")
        if (path / "adapter_config.json").is_file():
            read_config(path, "adapter_config.json")
            check_weights_safe(path, allow_pickle, "peft adapter")
            return Ref(source, "adapter", str(path.resolve()))
        if not (path / "config.json").is_file():
            raise ModelRefError(
                f"{source}: not a Hugging Face model directory: no config.json or adapter_config.json "
                "(save the model with save_pretrained, or give its directory)"
            )
        read_config(path)
        check_weights_safe(path, allow_pickle)
        return Ref(source, "local", str(path.resolve()))
    if source.startswith(("/", ".", "~")) or not _HUB_ID.match(source):
        raise ModelRefError(f"{source}: no such directory, and not a valid hub id (check the path)")
    if offline():
        raise ModelRefError(
            f"{source}: not a local directory, and the hub cannot be used offline "
            "because HF_HUB_OFFLINE is set (download the model to a directory and pass its path, or use "
            "a bundled organism such as zoo:chat-sft-upper)"
        )
    if not _hub_reachable():
        raise ModelRefError(
            f"{source}: not a local directory, and the Hugging Face hub is unreachable from this "
            "machine (pass a local directory, or use a bundled organism such as zoo:chat-sft-upper)"
        )
    return Ref(source, "hub", source)


DEFAULT_ZOO_SIZE = "tiny"  # what ``zoo:NAME`` without ``@SIZE`` names


class ZooRef(NamedTuple):
    """A parsed ``zoo:NAME[@SIZE][:side]``: the organism or base, its side (None: the pair), its zoo size."""

    name: str
    side: str | None
    size: str = DEFAULT_ZOO_SIZE


def split_zoo(source: str) -> ZooRef | None:
    """``zoo:NAME[@SIZE][:side]`` -> ZooRef(NAME, side or None, SIZE or tiny); None if ``source`` is not a zoo reference.

    The size is checked against the registered zoo's sizes (when one is registered): an unknown size is a
    ModelRefError naming them."""
    if not source.startswith("zoo:"):
        return None
    head, _, side = source[4:].partition(":")
    name, at, size = head.partition("@")
    if side not in ("", "base", "tuned"):
        where = " (the size comes before the side: zoo:NAME@SIZE:base)" if "@" in side else " (e.g. zoo:NAME:base)"
        raise ModelRefError(f"{source}: the side after the organism name must be 'base' or 'tuned'{where}")
    if at:
        sizes = _ZOO[0].sizes if _ZOO else ()
        if not size or (sizes and size not in sizes):
            known = f"one of {', '.join(sizes)}" if sizes else "a zoo size such as tiny or small"
            raise ModelRefError(f"{source}: unknown zoo size {size!r} (give {known} after '@', e.g. zoo:{name}@small)")
    return ZooRef(name, side or None, size or DEFAULT_ZOO_SIZE)


def zoo_ref(name: str, side: str | None = None, size: str = DEFAULT_ZOO_SIZE) -> str:
    """The reference ``split_zoo`` reads back as (name, side, size); ``@tiny`` is left out (the default)."""
    return f"zoo:{name}" + (f"@{size}" if size != DEFAULT_ZOO_SIZE else "") + (f":{side}" if side else "")


@dataclass(frozen=True)
class ZooResolver:
    """What ``zoo:NAME`` references need from the zoo (``alignloc.zoo`` registers one on import).

    ``resolve(name, size="tiny", build_missing=True)``: the built entry (``.base``, ``.tuned`` or None,
    ``.drift``, ``.ground_truth``), built first when allowed, else FileNotFoundError; ``check_name(name,
    size="tiny")``: an error unless the name exists, building nothing; ``prompts(name, size="tiny")``:
    the prompts an organism ships; ``recipe_tokenizer(name, size)``: the tokenizer an unbuilt model
    would be saved with, or None when it cannot be had without building; ``sizes``: the sizes that
    ``zoo:NAME@SIZE`` may name.
    """

    resolve: Callable[..., Any]
    check_name: Callable[..., None]
    prompts: Callable[..., list]
    recipe_tokenizer: Callable[[str, str], Any]
    sizes: tuple[str, ...] = (DEFAULT_ZOO_SIZE,)


_ZOO: list[ZooResolver] = []  # at most one: the registered zoo


def register_zoo_resolver(resolver: ZooResolver) -> None:
    """Make ``zoo:NAME`` references resolve through ``resolver`` (replacing any registered before)."""
    _ZOO[:] = [resolver]


def zoo_resolver(ref: str = "zoo:NAME") -> ZooResolver:
    """The registered zoo; a ModelRefError naming ``ref`` when none is (``alignloc.zoo`` not imported)."""
    if not _ZOO:
        raise ModelRefError(f"{ref}: a zoo reference, and the model-organism zoo is not loaded "
                            "(import alignloc.zoo first; the command line and alignloc.experiments do)")
    return _ZOO[0]
