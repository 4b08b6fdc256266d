"""``alignloc rl-formats``: the RL format-amplification experiment (a thin typer shell over
``alignloc.experiments.rlformats``, mounted by the CLI).

Every option and the output folder are checked before an organism is built or a model loaded.
"""

from __future__ import annotations

from pathlib import Path

import typer

from alignloc import options as check
from alignloc import progress
from alignloc.cli_options import OVERWRITE_HELP, QUIET


def rl_formats_cmd(
    out: Path = typer.Option(Path("rl-formats-report"), "--out", "-o", help="Report directory (report.json, summary.md, "
                             "a layer-diff report per scale)."),
    size: str = typer.Option("tiny", help="Zoo size to build or reuse: tiny (CPU minutes) | small."),
    n_boot: int = typer.Option(200, help="Bootstrap resamples of each layer-diff interval."),
    overwrite: bool = typer.Option(False, help=OVERWRITE_HELP),
    quiet: bool = QUIET,
) -> None:
    """Does RL with a correctness-only reward collapse onto one pretraining answer format, which one, at which scale, and where?"""
    progress.configure("quiet" if quiet else "auto")
    from alignloc.errors import UsageError
    from alignloc.experiments.rlformats import OUT_FILES, rl_formats_experiment
    from alignloc.store.outputs import check_out_dir
    from alignloc.zoo import check_size
    from alignloc.zoo.real import SIZE as REAL

    check_size(size)
    if size == REAL:
        raise UsageError("--size: the rl-formats organisms are trained from scratch; use tiny or small")
    check.at_least("--n-boot", n_boot)
    check_out_dir(out, OUT_FILES, overwrite=overwrite)
    result = rl_formats_experiment(out, size=size, n_boot=n_boot, log=lambda m: typer.echo(m, err=True))
    for line in result["verdict"]["summary"]:
        typer.echo(f"- {line}")
    typer.echo(f"report: {out / 'report.json'}  {out / 'summary.md'}")
