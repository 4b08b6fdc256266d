"""Filesystem helpers of the zoo: atomic installs, tensor hashes, tokenizer copies, prompt files.

Only ``registry`` calls these; they hold no zoo logic.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from alignloc.prompts import Prompt, save_prompts


def weights_sha256(model_dir: str | Path) -> str:
    """SHA-256 over the tensors of ``model.safetensors`` (sorted names, dtype, shape, bytes)."""
    from safetensors import safe_open

    h = hashlib.sha256()
    with safe_open(str(Path(model_dir) / "model.safetensors"), framework="pt") as f:
        for name in sorted(f.keys()):
            t = f.get_tensor(name).contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def prompt_map(path: Path) -> dict[str, Path]:
    """``{stem: path}`` of the prompt files an artifact ships (``prompts/*.jsonl``)."""
    return {p.stem: p for p in sorted((path / "prompts").glob("*.jsonl"))}


def write_prompts(path: Path, sets: dict[str, list[Prompt]]) -> list[str]:
    """Write each prompt set to ``prompts/<name>.jsonl``; return paths relative to ``path``."""
    return [
        str(save_prompts(ps, path / "prompts" / f"{k}.jsonl").relative_to(path))
        for k, ps in sets.items()
    ]


def install(tmp: Path, final: Path, log: Callable[[str], None]) -> None:
    """Atomically move a finished build into place (replacing an old one if present)."""
    old = None
    if final.exists():
        old = final.with_name(f".old-{final.name}-{uuid.uuid4().hex[:8]}")
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except OSError:  # another process installed it first: keep theirs
        log(f"  {final.name}: installed concurrently by another build; keeping that one")
        shutil.rmtree(tmp, ignore_errors=True)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def copy_tokenizer(src: Path, dst: Path) -> None:
    """Copy the base's tokenizer files byte for byte (tuned and base must hash the same), its chat
    template included (``chat_template.jinja`` / ``.json``: without it the tuned side reads no template)."""
    for f in src.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy2(f, dst / f.name)


@contextmanager
def quiet() -> Iterator[None]:
    """Silence transformers / datasets progress bars during a build; restore afterwards."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        import datasets

        ds_bars = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()
    except ImportError:  # datasets is only needed by the DPO recipe
        datasets, ds_bars = None, False
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()
        if datasets is not None and ds_bars:
            datasets.enable_progress_bars()


def tmp_dir(final: Path) -> Path:
    """A fresh temporary sibling of ``final`` (same filesystem, so the final rename is atomic)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    return tmp


def sweep_stale(root: Path) -> None:
    """Remove temporary build dirs left behind by build processes that no longer run."""
    if not root.is_dir():
        return
    for d in root.glob(".tmp-*"):
        try:
            pid = int(d.name.rsplit("-", 2)[1])
            os.kill(pid, 0)  # raises if no such process
        except (ValueError, IndexError, ProcessLookupError):
            shutil.rmtree(d, ignore_errors=True)
        except PermissionError:  # alive, owned by someone else
            pass
    for d in root.glob(".old-*"):
        shutil.rmtree(d, ignore_errors=True)
