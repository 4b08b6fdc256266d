"""Model references: a local HF directory, a hub id, or ``zoo:NAME[:base|tuned]``.

Resolving a reference never loads weights; it checks that what is there can be loaded safely
(safetensors only, unless pickle is explicitly allowed) and fails fast when offline.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path


class ModelRefError(ValueError):
    """A model reference cannot be resolved or loaded; the message says what to do."""


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
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


def check_weights_safe(directory: Path, allow_pickle: bool, what: str = "checkpoint") -> None:
    """Refuse a directory whose weights exist only as pickle files, unless ``allow_pickle``."""
    files = [p for p in directory.iterdir() if p.is_file()]
    has_safe = any(p.suffix == ".safetensors" for p in files)
    pickles = sorted(p.name for p in files if p.suffix in PICKLE_SUFFIXES)
    if has_safe:
        return
    if pickles and not allow_pickle:
        raise ModelRefError(
            f"{directory}: the {what} holds only pickle weights ({', '.join(pickles)}). Loading a "
            "pickle can run arbitrary code, so alignloc refuses it. Convert it to safetensors "
            "(model.save_pretrained(dir, safe_serialization=True) on a trusted machine), or pass "
            "--allow-pickle (allow_pickle=True) if you trust its source."
        )
    if not pickles:
        raise ModelRefError(f"{directory}: no weights found (*.safetensors) in this {what}")


def resolve_ref(source: str, allow_pickle: bool = False) -> Ref:
    """Classify and check a model reference (local dir, adapter dir, or hub id); zoo refs excluded."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelRefError(f"{source}: expected a Hugging Face model directory, got a file")
        if (path / "adapter_config.json").is_file():
            check_weights_safe(path, allow_pickle, "peft adapter")
            return Ref(source, "adapter", str(path.resolve()))
        if not (path / "config.json").is_file():
            raise ModelRefError(
                f"{source}: not a Hugging Face model directory (no config.json or adapter_config.json)"
            )
        check_weights_safe(path, allow_pickle)
        return Ref(source, "local", str(path.resolve()))
    if source.startswith(("/", ".", "~")) or not _HUB_ID.match(source):
        raise ModelRefError(f"{source}: no such directory, and not a valid hub id")
    if offline():
        raise ModelRefError(
            f"{source}: not a local directory, and the hub cannot be used offline "
            "(HF_HUB_OFFLINE is set). Download the model to a directory and pass its path, or use "
            "a bundled organism such as zoo:chat-sft-upper."
        )
    if not _hub_reachable():
        raise ModelRefError(
            f"{source}: not a local directory, and the Hugging Face hub is unreachable from this "
            "machine. Pass a local directory, or use a bundled organism such as zoo:chat-sft-upper."
        )
    return Ref(source, "hub", source)


def split_zoo(source: str) -> tuple[str, str | None] | None:
    """``zoo:NAME[:side]`` -> (NAME, side or None); None if ``source`` is not a zoo reference."""
    if not source.startswith("zoo:"):
        return None
    name, _, side = source[4:].partition(":")
    if side not in ("", "base", "tuned"):
        raise ModelRefError(f"{source}: the side after the organism name must be 'base' or 'tuned'")
    return name, side or None
