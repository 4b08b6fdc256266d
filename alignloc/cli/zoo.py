"""``alignloc zoo ...``: build and list the model organisms (a thin typer shell over ``zoo.registry``; it lives beside
the CLI, outside the zoo package, so that ``alignloc --help`` imports neither the zoo nor torch).

An unknown name or size raises ``ZooError`` before any work; the command line prints it as one line.
"""

from __future__ import annotations

import json

import typer

from alignloc import progress
from alignloc.cli.options import QUIET, json_option, overwrite_option, size_option
from alignloc.zoo import REAL_SIZE
from alignloc.zoo import TRAINED_SIZES as SIZE_NAMES  # light: plain names, no torch for --help

zoo_app = typer.Typer(
    help="Self-trained model organisms with a planted, recorded ground truth.", no_args_is_help=True
)

_SIZE_HELP = (f"Zoo size: {' | '.join(SIZE_NAMES)} | {REAL_SIZE} (tiny builds the default set in a few CPU minutes; real plants "
              "edits on SmolLM2-135M's real weights, when they can be had: see docs/measures.md).")


@zoo_app.command("build")
def build_cmd(
    names: list[str] | None = typer.Argument(
        None, help="Organisms to build (default: the default set and both bases)."
    ),
    size: str = size_option(_SIZE_HELP),
    overwrite: bool = overwrite_option("Rebuild the named organisms (and bases, when named) even if a current build "
                                       "exists."),
    quiet: bool = QUIET,
) -> None:
    """Build organisms (reusing current builds) and print where they are.

    Training runs on CPU whatever GPU the machine has (the zoo's training code pins it, and every build is checked
    against its recorded specification), so this command takes no --device."""
    from alignloc.zoo.registry import build

    progress.configure("quiet" if quiet else "auto")
    paths = build(names or None, size=size, force=overwrite, log=(lambda m: None) if quiet else (lambda m: typer.echo(m, err=True)))
    for p in paths:
        typer.echo(str(p))


_KEYS = (
    "format_rate",
    "refusal_rate_on_topic",
    "refusal_rate_off_topic",
    "polite_rate",
    "edit_success",
    "retention",
    "fact_recall_strong",
    "fact_recall_weak",
    "fact_recall",
    "context_effect",
)


@zoo_app.command("list")
def list_cmd(
    size: str = size_option(_SIZE_HELP),
    as_json: bool = json_option("Print the list as JSON on stdout (name, path, numbers) instead of the text."),
) -> None:
    """List organisms: built or not, planted layers, and measured numbers."""
    from alignloc.zoo.registry import list_organisms

    rows = list_organisms(size)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        m = r["measured"].get("tuned", r["measured"])
        nums = "  ".join(f"{k}={m[k]:.2f}" for k in _KEYS if isinstance(m.get(k), (int, float)))
        state = "built" if r["built"] else "-"
        typer.echo(f"{r['name']:<26} {state:<6} layers={r['layers']}  {nums}")
        spec = r.get("spec")
        if spec:
            typer.echo(f"    spec {'met' if spec['met'] else 'MISSED'} (training seed {spec['training_seed']}, "
                       f"attempt {spec['attempt']} of {spec['max_attempts']}):")
            for c in spec["requirements"]:
                typer.echo(f"      {'ok  ' if c['ok'] else 'MISS'} {c['requirement']:<58} measured {c['value']}")
