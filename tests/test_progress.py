"""Progress: one line per long step off a terminal, nothing with --quiet, a bar on a terminal."""

from __future__ import annotations

import io

import pytest

from alignloc import progress
from alignloc.cli import main


def test_modes_report_long_stages_only(monkeypatch, capsys):
    monkeypatch.setattr(progress, "DELAY", 0.0)
    progress.configure("lines")
    assert list(progress.iterate(range(3), "three things", unit="thing")) == [0, 1, 2]
    line = capsys.readouterr().err.strip()
    assert line.startswith("[alignloc] three things: 3/3 things in ") and line.endswith(" s")
    progress.configure("quiet")
    assert list(progress.iterate(range(3), "three things")) == [0, 1, 2]
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(progress, "DELAY", 60.0)  # shorter than the delay: no line
    progress.configure("lines")
    list(progress.iterate(range(3), "quick"))
    assert capsys.readouterr().err == ""
    with pytest.raises(ValueError, match="progress mode"):
        progress.configure("loud")
    progress.configure("auto")


def test_a_bar_with_its_rate_on_a_terminal(monkeypatch):
    buf = io.StringIO()
    monkeypatch.delenv("TQDM_DISABLE", raising=False)  # the suite silences tqdm in libraries (conftest)
    monkeypatch.setattr(progress, "DELAY", 0.0)
    monkeypatch.setattr("sys.stderr", buf)
    progress.configure("bar")
    with progress.stage("decode", total=4, unit="batch") as advance:
        for _ in range(4):
            advance()
    progress.configure("auto")
    assert "decode" in buf.getvalue() and "4/4" in buf.getvalue() and "batch" in buf.getvalue()


def test_capture_reports_each_side_and_quiet_silences_it(llama_pair, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(progress, "DELAY", 0.0)
    from alignloc.prompts import Prompt, save_prompts

    save_prompts([Prompt(id=f"p{i}", text=f"the cat {i} sat") for i in range(6)], tmp_path / "p.jsonl")
    args = ["capture", *map(str, llama_pair), "--prompts", str(tmp_path / "p.jsonl"), "--batch-size", "2"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("[alignloc] capture")]
    assert [x.split(":")[0] for x in lines] == [f"[alignloc] capture {s} -> {tmp_path / 'a'}" for s in ("base", "tuned")]
    assert all(": 3/3 batches in " in x for x in lines)
    assert main([*args, "--out", str(tmp_path / "b"), "--quiet"]) == 0
    assert "[alignloc]" not in capsys.readouterr().err
