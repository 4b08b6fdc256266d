"""``alignloc rl-formats``: the RL format-amplification experiment (a thin typer shell over
``alignloc.experiments.rlformats``, mounted by the CLI).

Every option and the output folder are checked before an organism is built or a model loaded.
"""

from __future__ import annotations

from pathlib import Path

import typer

from alignloc import options as check
from alignloc import progress
from alignloc.cli.options import (
    COMPUTE_DTYPE,
    DEVICE,
    DEVICE_MAP,
    N_BOOT,
    QUIET,
    load_options,
    out_option,
    overwrite_option,
    size_option,
)


def rl_formats_cmd(
    out: Path = out_option(Path("rl-formats-report"), "Report directory (report.json, summary.md, a layer-diff report "
                           "per scale)."),
    size: str = size_option("Zoo size to build or reuse: tiny (CPU minutes) | small."),
    n_boot: int = N_BOOT,
    device: str = DEVICE, compute_dtype: str = COMPUTE_DTYPE, device_map: str = DEVICE_MAP,
    overwrite: bool = overwrite_option(),
    quiet: bool = QUIET,
) -> None:
    """Does RL with a correctness-only reward collapse onto one pretraining answer format, which one, at which scale, and where?

    --device, --compute-dtype and --device-map place the measured pairs; the organisms themselves are trained on
    CPU (the zoo's training is pinned to it, so that a build is reproducible)."""
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
    opts = load_options(device, compute_dtype, device_map)
    check_out_dir(out, OUT_FILES, overwrite=overwrite)
    result = rl_formats_experiment(out, size=size, n_boot=n_boot, log=lambda m: typer.echo(m, err=True), options=opts)
    for line in result["verdict"]["summary"]:
        typer.echo(f"- {line}")
    typer.echo(f"report: {out / 'report.json'}  {out / 'summary.md'}")
