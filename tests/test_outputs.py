"""Output folders: alignloc writes where it may and never replaces or deletes a file it did not write."""

from __future__ import annotations

import json

import pytest

from alignloc.errors import OutputError
from alignloc.store.outputs import MARKER, check_out_dir, check_out_file, foreign, write_outputs


def test_new_folder_then_rerun_replaces_only_own_files(tmp_path):
    out = tmp_path / "a" / "b"
    check_out_dir(out, ["r.json"], overwrite=False)  # a missing folder (and parents) is fine
    assert not out.exists()  # the check writes nothing
    write_outputs(out, {"r.json": b"1", "s.md": b"2"})
    assert json.loads((out / MARKER).read_text())["files"] == ["r.json", "s.md"]
    check_out_dir(out, ["r.json", "s.md"], overwrite=False)  # its own earlier outputs: a rerun may replace them
    write_outputs(out, {"r.json": b"3"})
    assert (out / "r.json").read_bytes() == b"3" and foreign(out) == []


def test_other_files_need_overwrite_and_are_never_replaced(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"holds files alignloc did not write \(notes.txt\)"):
        check_out_dir(tmp_path, ["r.json"], overwrite=False)
    check_out_dir(tmp_path, ["r.json"], overwrite=True)
    write_outputs(tmp_path, {"r.json": b"1"})
    (tmp_path / "s.md").write_text("also mine")
    for overwrite in (False, True):
        with pytest.raises(OutputError, match="s.md already there and not written by alignloc"):
            check_out_dir(tmp_path, ["r.json", "s.md"], overwrite=overwrite)
    with pytest.raises(OutputError, match="s.md already there"):
        write_outputs(tmp_path, {"r.json": b"2", "s.md": b"x"})
    assert (tmp_path / "s.md").read_text() == "also mine" and (tmp_path / "r.json").read_bytes() == b"1"
    assert foreign(tmp_path) == ["notes.txt", "s.md"]


def test_own_subfolders_empty_folders_and_temp_leftovers_are_not_foreign(tmp_path):
    write_outputs(tmp_path / "sub", {"r.json": b"1"})
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "manifest.json").write_text(json.dumps({"format": "alignloc-activation-store"}))
    (tmp_path / "empty").mkdir()
    write_outputs(tmp_path, {"x.json": b"1"})
    (tmp_path / ".x.json.abc123.tmp").write_bytes(b"half")  # an interrupted atomic write of an own file
    assert foreign(tmp_path) == []
    (tmp_path / ".y.json.abc123.tmp").write_bytes(b"?")
    assert foreign(tmp_path) == [".y.json.abc123.tmp"]


def test_a_corrupted_marker_claims_nothing(tmp_path):
    write_outputs(tmp_path, {"r.json": b"1"})
    for bad in ('{"files": ["../../etc/passwd", "r.json"', '{"files": 3}', "[]", '{"files": ["../x", "/etc", ".."]}'):
        (tmp_path / MARKER).write_text(bad)
        assert foreign(tmp_path) == ["r.json"]


def test_single_output_files(tmp_path):
    with pytest.raises(OutputError, match="is a folder"):
        check_out_file(tmp_path, overwrite=True, option="--json")
    (tmp_path / "b.json").write_text("{}")
    with pytest.raises(OutputError, match="already exists"):
        check_out_file(tmp_path / "b.json", overwrite=False, option="--json")
    check_out_file(tmp_path / "b.json", overwrite=True, option="--json")
    check_out_file(tmp_path / "new" / "c.json", overwrite=False, option="--json")
    with pytest.raises(OutputError, match="cannot be created"):
        check_out_file(tmp_path / "b.json" / "c.json", overwrite=False, option="--json")
