"""Regenerate the paper-style summary: run (or reuse) the zoo experiments, then draw every figure.

``zoo_results(cache)`` runs each experiment once on the tiny zoo and keeps its JSON under
``cache`` (reused while the file exists); ``make_figures(paths, out, formats)`` draws figures
from any alignloc JSON results.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from alignloc.report.figures import ResultError, export, figures_for

Log = Callable[[str], None]


def _layer_diff(name: str, causal: bool) -> Callable[[Path], None]:
    def run(out: Path) -> None:
        from alignloc.cli import organism_prompts
        from alignloc.layerdiff.run import default_control, layer_diff
        from alignloc.models.pair import load_pair

        pair = load_pair(f"zoo:{name}")
        layer_diff(pair, organism_prompts(name), out, control=default_control(pair), n_boot=300, probes=True, causal=causal)

    return run


def _localize_bench(out: Path) -> None:
    from alignloc.causal.bench import localize_bench
    from alignloc.report import json_safe
    from alignloc.store.manifest import atomic_write_bytes

    atomic_write_bytes(out / "report.json", json.dumps(json_safe(localize_bench()), indent=1).encode())


def _context_prior(out: Path) -> None:
    from alignloc.cli import organism_prompts
    from alignloc.contextprior.data import load_sets
    from alignloc.contextprior.run import context_prior_report
    from alignloc.models.pair import load_model

    model = load_model("zoo:base")
    context_prior_report(model, load_sets(organism_prompts("base")), out, bos=True)


def _proxy_tune(out: Path) -> None:
    from alignloc.cli import organism_prompts
    from alignloc.decoding.experiment import proxy_tune_report
    from alignloc.models.pair import load_model

    lb, sb, st, lt = (load_model(f"zoo:{n}") for n in ("base-large", "base", "chat-sft-full", "chat-sft-full-large"))
    proxy_tune_report(lb, sb, st, organism_prompts("chat-sft-full"), out, bos=True, large_tuned=lt)


EXPERIMENTS: dict[str, Callable[[Path], None]] = {
    "layer-diff-chat-sft-upper": _layer_diff("chat-sft-upper", causal=False),
    "layer-diff-refusal-lora-L2": _layer_diff("refusal-lora-L2", causal=True),
    "localize-bench": _localize_bench,
    "context-prior": _context_prior,
    "proxy-tune": _proxy_tune,
}


def zoo_results(cache: str | Path, log: Log = lambda m: None) -> list[Path]:
    """The ``report.json`` of every zoo experiment under ``cache``, running the missing ones."""
    cache = Path(cache)
    paths = []
    for name, run in EXPERIMENTS.items():
        path = cache / name / "report.json"
        if path.is_file():
            log(f"{name}: reusing {path}")
        else:
            log(f"{name}: running (results in {path.parent})")
            run(path.parent)
        paths.append(path)
    return paths


def make_figures(results: list[str | Path], out: str | Path, formats: list[str], log: Log = lambda m: None) -> list[Path]:
    """Figures for every result file (a ``report.json`` or a directory holding one); the paths written."""
    figs = []
    for r in results:
        p = Path(r)
        p = p / "report.json" if p.is_dir() else p
        if not p.is_file():
            raise ResultError(f"{r}: no such result (give a report.json, its directory, or localize-bench --json output)")
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ResultError(f"{p}: not valid JSON ({e.msg} at line {e.lineno})") from None
        try:
            new = figures_for(data)
        except ResultError as e:
            raise ResultError(f"{p}: {e}") from None
        log(f"{p}: {', '.join(stem for stem, _ in new)}")
        figs += new
    return export(figs, out, formats)
