"""Output paths: alignloc writes only where it may, and never replaces or deletes a file it did not write.

A folder that alignloc writes results into keeps ``.alignloc-outputs``, a JSON list of the names
alignloc wrote there; an entry counts as alignloc's own when that list names it, or when it is a
folder holding such a list or an activation store (``manifest.json`` of format
``alignloc-activation-store``), or an empty folder. The rules, checked by ``check_out_dir`` before
any work starts and again by ``write_outputs`` at write time:

- the path must be a folder, or a path whose first existing parent is a writable folder;
- a folder holding entries that are not alignloc's own is refused unless ``overwrite``;
- even with ``overwrite``, a name alignloc is about to write that is taken by an entry that is not
  its own is refused: ``overwrite`` lets alignloc write *next to* other files and replace its own
  earlier outputs, never replace the other files.

A single output file must be new, or ``overwrite`` given (``check_out_file``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from alignloc.errors import OutputError
from alignloc.store.manifest import FORMAT, MANIFEST, atomic_write_bytes, atomic_write_json

MARKER = ".alignloc-outputs"
_SHOW = 3  # foreign names listed in a message


def _first_existing(path: Path) -> Path:
    p = path.absolute()
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def _creatable(path: Path, option: str, shown: Path) -> None:
    """OutputError unless the first existing ancestor of folder ``path`` is a folder this process can write to."""
    anc = _first_existing(path)
    if not anc.is_dir():
        raise OutputError(f"{option} {shown}: {anc} is a file, so {shown} cannot be created (choose another path)")
    if not os.access(anc, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids):
        raise OutputError(f"{option} {shown}: {anc} is not writable (choose a folder you can write to)")


def check_writable_dir(path: str | Path, option: str = "--out") -> None:
    """OutputError unless ``path`` is a writable folder or can be created as one."""
    path = Path(path)
    if os.path.lexists(path) and not path.is_dir():
        raise OutputError(f"{option} {path}: is a file, not a folder (give a folder path)")
    _creatable(path, option, path)


def recorded(folder: Path) -> set[str]:
    """The names alignloc recorded as written in ``folder`` (empty when there is no readable record)."""
    try:
        data = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return set()
    names = data.get("files") if isinstance(data, dict) else None
    if not isinstance(names, list):
        return set()
    return {n for n in names if isinstance(n, str) and "/" not in n and n not in ("", ".", "..")}


def _is_store(path: Path) -> bool:
    try:
        data = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT


def is_own(folder: Path, name: str, names: set[str] | None = None) -> bool:
    """Whether entry ``name`` of ``folder`` is alignloc's own output (see the module docstring)."""
    names = recorded(folder) if names is None else names
    p = folder / name
    if name == MARKER or name in names:
        return True
    if name.startswith(".") and name.endswith(".tmp") and any(name.startswith(f".{n}.") for n in names | {MARKER}):
        return True  # left by an interrupted atomic write of one of alignloc's files
    if p.is_dir() and not p.is_symlink():
        return (p / MARKER).is_file() or _is_store(p) or not any(p.iterdir())
    return False


def foreign(folder: str | Path) -> list[str]:
    """Sorted names of the entries of ``folder`` that are not alignloc's own (empty if it does not exist)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    names = recorded(folder)
    return sorted(e.name for e in folder.iterdir() if not is_own(folder, e.name, names))


def _listing(names: list[str]) -> str:
    return ", ".join(names[:_SHOW]) + (f" and {len(names) - _SHOW} more" if len(names) > _SHOW else "")


def check_out_dir(path: str | Path, names: list[str] | tuple[str, ...], *, overwrite: bool, option: str = "--out") -> None:
    """Before any work: OutputError unless alignloc may write ``names`` into folder ``path``."""
    path = Path(path)
    check_writable_dir(path, option)
    others = foreign(path)
    taken = [n for n in names if n in others]
    if taken:
        raise OutputError(f"{option} {path}: {_listing(taken)} already there and not written by alignloc; nothing was "
                          "changed (choose another folder: --overwrite never replaces files alignloc did not write)")
    if others and not overwrite:
        raise OutputError(f"{option} {path}: the folder holds files alignloc did not write ({_listing(others)}); "
                          "nothing was changed (choose an empty or new folder, or pass --overwrite to write next to them)")


def claim(folder: str | Path, names: list[str] | tuple[str, ...]) -> Path:
    """Create ``folder`` if needed and record ``names`` as alignloc's (refusing names taken by other files)."""
    folder = Path(folder)
    check_writable_dir(folder, "output folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"output folder {folder}: cannot create it: {e.strerror} (choose another path)") from None
    have = recorded(folder)
    taken = [n for n in names if os.path.lexists(folder / n) and not is_own(folder, n, have)]
    if taken:
        raise OutputError(f"{folder}: {_listing(taken)} already there and not written by alignloc; nothing was written "
                          "(move them away or choose another folder)")
    if not set(names) <= have:
        atomic_write_json(folder / MARKER, {"written_by": "alignloc", "files": sorted(have | set(names))})
    return folder


def write_outputs(folder: str | Path, files: dict[str, bytes]) -> dict[str, Path]:
    """Write each ``{name: bytes}`` atomically under ``folder`` after ``claim``-ing the names; their paths."""
    folder = claim(folder, list(files))
    out = {}
    for name, data in files.items():
        out[name] = write_file(folder / name, data)
    return out


def check_out_file(path: str | Path, *, overwrite: bool, option: str) -> None:
    """Before any work: OutputError unless ``path`` can be written as a new file (or replaced, with ``overwrite``)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{option} {path}: is a folder (give the path of a file to write)")
    if os.path.lexists(path.parent) and not path.parent.is_dir():
        raise OutputError(f"{option} {path}: {path.parent} is a file, so {path} cannot be created (choose another path)")
    _creatable(path.parent, option, path)
    if os.path.lexists(path) and not overwrite:
        raise OutputError(f"{option} {path}: the file already exists; nothing was changed (choose another name, or "
                          "pass --overwrite to replace it)")


def write_file(path: str | Path, data: bytes) -> Path:
    """Write one output file atomically (readable by others); OutputError if its folder cannot be used."""
    path = Path(path)
    check_writable_dir(path.parent, "output")
    try:
        atomic_write_bytes(path, data)
    except OSError as e:
        raise OutputError(f"{path}: cannot write it: {e.strerror} (choose another path)") from None
    return path
