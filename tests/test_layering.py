"""The import graph of the library: no cycles between modules or between rooms, every room imports only the
rooms below it in ``ORDER``, and nothing imports the command line."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import alignloc
from alignloc.errors import UserError

ROOT = Path(alignloc.__file__).parent
CLI = ("alignloc.cli", *(f"alignloc.cli.{p.stem}" for p in sorted((ROOT / "cli").glob("*.py")) if p.stem != "__init__"))


# The rooms of the house, lowest first: a room is a top-level folder or module of alignloc (``alignloc`` is
# the package's own __init__; the command line is the package ``alignloc.cli``). Each room imports only rooms of
# earlier rows; rooms of one row import none of each other.
ORDER = [
    ("alignloc", "errors", "progress"),  # the package's version and lazy names; errors; progress lines
    ("textio", "sites"),
    ("prompts",),
    ("tokens",),
    ("models",),  # references, pair loading, site tables, hooks, backends (zoo:NAME through a registered resolver)
    ("options", "store"),
    ("capturing", "analyses", "interventions", "suites"),
    ("layerdiff", "causal", "contextprior", "decoding"),  # measurements that run models
    ("zoo",),  # the organisms: trained and measured with the rooms below
    ("report",),  # renders results; runs nothing
    ("experiments",),  # whole experiments: load, measure, hand to report
    ("cli",),
]
# rooms that run a model or an experiment: report renders results and imports none of them
RUNS_MODELS = {"models", "capturing", "analyses", "interventions", "layerdiff", "causal", "contextprior", "decoding",
               "zoo", "experiments"}


def modules() -> dict[str, Path]:
    out = {}
    for f in ROOT.rglob("*.py"):
        parts = f.relative_to(ROOT.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def imports_of(source: str, mods: dict[str, Path] | set[str]) -> set[str]:
    """The modules of ``mods`` that ``source`` imports anywhere (function bodies included)."""

    def owner(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    out = set()
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module for a in node.names]
        out |= {t for n in names if n.startswith("alignloc") and (t := owner(n))}
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> alignloc modules it imports anywhere in its body (function-level imports included)."""
    mods = modules()
    return {m: imports_of(f.read_text(), mods) - {m} for m, f in mods.items()}


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


def room(module: str) -> str:
    """``alignloc.X...`` -> ``X`` (``alignloc`` for the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "alignloc"


def room_graph(graph: dict[str, set[str]] | None = None) -> dict[str, dict[str, set[str]]]:
    """room -> {room it imports: the module imports that make the edge}."""
    out: dict[str, dict[str, set[str]]] = {}
    for m, targets in (import_graph() if graph is None else graph).items():
        out.setdefault(room(m), {})
        for t in targets:
            if room(t) != room(m):
                out[room(m)].setdefault(room(t), set()).add(f"{m} -> {t}")
    return out


def upward(rooms: dict[str, dict[str, set[str]]]) -> list[str]:
    """Every import of a room from a room not below it in ``ORDER``."""
    row = {r: i for i, names in enumerate(ORDER) for r in names}
    return sorted(e for a, targets in rooms.items() for b, edges in targets.items() if row[b] >= row[a] for e in edges)


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


def test_every_room_has_its_place_in_the_order():
    listed = [r for names in ORDER for r in names]
    assert len(listed) == len(set(listed))
    assert set(room_graph()) == set(listed), "place a new folder or module in ORDER"


def test_no_cycle_between_rooms():
    rooms = room_graph()
    assert cycles({a: set(t) for a, t in rooms.items()}) == []


def test_each_room_imports_only_rooms_below_it():
    assert upward(room_graph()) == []


def test_the_order_check_sees_an_import_inside_a_function():
    """A zoo lookup inside a function of models/ (the loop the resolver removed) is an upward import."""
    graph = import_graph()
    source = "def load(name):\n    from alignloc.zoo.registry import resolve\n\n    return resolve(name)\n"
    graph["alignloc.models.pair"] |= imports_of(source, set(graph))
    assert upward(room_graph(graph)) == ["alignloc.models.pair -> alignloc.zoo.registry"]


def test_only_the_command_line_sits_above_the_experiments():
    assert ORDER[-2:] == [("experiments",), ("cli",)]
    importers = {a for a, targets in room_graph().items() if "experiments" in targets}
    assert importers <= {"cli"}, importers


def test_report_renders_and_runs_nothing():
    """report reads results: it imports no room that runs a model or an experiment (zoo and experiments included)."""
    assert set(room_graph()["report"]) & RUNS_MODELS == set()
