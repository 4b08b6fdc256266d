"""The import graph of the library: no cycles, and nothing imports the command line."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import alignloc
from alignloc.errors import UserError

ROOT = Path(alignloc.__file__).parent
CLI = ("alignloc.cli", "alignloc.cli_errors", "alignloc.cli_zoo", "alignloc.cli_experiments")


def modules() -> dict[str, Path]:
    out = {}
    for f in ROOT.rglob("*.py"):
        parts = f.relative_to(ROOT.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> alignloc modules it imports anywhere in its body (function-level imports included)."""
    mods = modules()

    def owner(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        for node in ast.walk(ast.parse(f.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module for a in node.names]
            for n in names:
                target = owner(n) if n.startswith("alignloc") else None
                if target and target != m:
                    graph[m].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (iterative Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_nothing_in_the_library_imports_the_command_line():
    importers = {m: sorted(t & set(CLI)) for m, t in import_graph().items() if t & set(CLI) and m not in CLI}
    assert importers == {}


def test_the_error_page_lists_every_user_error_class():
    """docs/errors.md's error list names every UserError subclass the library defines."""
    for info in pkgutil.walk_packages(alignloc.__path__, "alignloc."):
        if not info.name.startswith(CLI):
            importlib.import_module(info.name)
    found, todo = set(), [UserError]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            if sub.__module__.startswith("alignloc"):
                found.add(sub.__name__)
                todo.append(sub)
    page = (ROOT.parent / "docs" / "errors.md").read_text()
    listed = set(re.findall(r"^- `(\w+Error)`", page, flags=re.M))
    assert found >= {"UsageError", "OutputError", "StoreError", "PromptFormatError", "ModelRefError"}
    assert found == listed, (found - listed, listed - found)
