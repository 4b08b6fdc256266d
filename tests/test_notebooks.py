"""The notebooks are documentation that runs: each executes top to bottom on the tiny zoo."""

from __future__ import annotations

import warnings
from datetime import datetime
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

TIMEOUT = 1200  # per cell; a cell past a quarter of it is reported (warnings), since a shared CPU may slow it many times
NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def _seconds(cell) -> float:
    """How long a code cell ran (nbclient's recorded timing), 0 for other cells."""
    t = cell.get("metadata", {}).get("execution", {})
    start, end = t.get("iopub.execute_input"), t.get("shell.execute_reply")
    if not (start and end):
        return 0.0
    return (datetime.fromisoformat(end.replace("Z", "+00:00")) - datetime.fromisoformat(start.replace("Z", "+00:00"))).total_seconds()


HEAVY = {"06_seeds_thesis"}  # builds the large twins (chat-lima-large, rl-formats-large): with ALIGNLOC_HEAVY=1


@pytest.mark.parametrize("path", [pytest.param(p, marks=[pytest.mark.heavy] if p.stem in HEAVY else [], id=p.stem)
                                  for p in NOTEBOOKS])
def test_notebook_runs(path, zoo_tiny, tmp_path):
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    slow = {i: s for i, s in enumerate(map(_seconds, nb.cells)) if s > TIMEOUT / 4}
    if slow:  # not a failure (speed depends on the machine), but said: cells should stay far inside the timeout
        warnings.warn(f"{path.stem}: cells {slow} took over a quarter of the {TIMEOUT} s cell timeout", stacklevel=1)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
