"""The zoo experiments behind the paper-style figures: run (or reuse) each, keeping its JSON.

``zoo_results(cache)`` runs each experiment once on the tiny zoo and keeps its ``report.json`` under
``cache`` (reused while the file exists); ``alignloc.report.paper.make_figures`` draws them. Each experiment
takes the folder it writes and the ``LoadOptions`` its models are loaded with (device, compute dtype, device map).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from alignloc.models.load_options import LoadOptions
from alignloc.store.outputs import claim

Log = Callable[[str], None]
Experiment = Callable[[Path, LoadOptions], None]  # (the folder it writes, how its models are loaded)


def _layer_diff(name: str, causal: bool) -> Experiment:
    def run(out: Path, options: LoadOptions) -> None:
        from alignloc.experiments.layerdiff import default_control, layer_diff
        from alignloc.models.pair import load_pair
        from alignloc.zoo import organism_prompts

        pair = load_pair(f"zoo:{name}", options)
        layer_diff(pair, organism_prompts(name), out, control=default_control(pair, options=options), n_boot=300,
                   probes=True, causal=causal)

    return run


def _localize_bench(out: Path, options: LoadOptions) -> None:
    from alignloc.experiments.localize_bench import localize_bench
    from alignloc.report import json_safe
    from alignloc.store.outputs import write_outputs

    write_outputs(out, {"report.json": json.dumps(json_safe(localize_bench(options=options).to_json()), indent=1).encode()})


def _context_prior(out: Path, options: LoadOptions) -> None:
    from alignloc.contextprior.data import load_sets
    from alignloc.experiments.contextprior import context_prior_report
    from alignloc.models.pair import load_model
    from alignloc.zoo import organism_prompts

    model = load_model("zoo:base", options)
    context_prior_report(model, load_sets(organism_prompts("base")), out, bos=True)


def _proxy_tune(out: Path, options: LoadOptions) -> None:
    from alignloc.experiments.proxytune import proxy_tune_report
    from alignloc.models.pair import load_model
    from alignloc.zoo import organism_prompts

    lb, sb, st, lt = (load_model(f"zoo:{n}", options) for n in ("base-large", "base", "chat-sft-full", "chat-sft-full-large"))
    proxy_tune_report(lb, sb, st, organism_prompts("chat-sft-full"), out, bos=True, large_tuned=lt)


EXPERIMENTS: dict[str, Experiment] = {
    "layer-diff-chat-sft-upper": _layer_diff("chat-sft-upper", causal=False),
    "layer-diff-refusal-lora-L2": _layer_diff("refusal-lora-L2", causal=True),
    "localize-bench": _localize_bench,
    "context-prior": _context_prior,
    "proxy-tune": _proxy_tune,
}


def zoo_results(cache: str | Path, log: Log = lambda m: None, options: LoadOptions | None = None) -> list[Path]:
    """The ``report.json`` of every zoo experiment under ``cache``, running the missing ones (their models loaded
    with ``options``)."""
    cache = Path(cache)
    claim(cache, list(EXPERIMENTS))  # each experiment's folder is alignloc's, even while it is being filled
    paths = []
    for name, run in EXPERIMENTS.items():
        path = cache / name / "report.json"
        if path.is_file():
            log(f"{name}: reusing {path}")
        else:
            log(f"{name}: running (results in {path.parent})")
            run(path.parent, options or LoadOptions())
        paths.append(path)
    return paths


