"""The README's main job on the bundled organism: `alignloc demo`, and `zoo:NAME` in capture."""

from __future__ import annotations

import pytest

from alignloc.cli import main
from alignloc.store import open_store


@pytest.mark.slow
def test_demo_localizes_the_planted_layers(zoo_tiny, tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    text = capsys.readouterr().out
    st = open_store(tmp_path / "demo" / "acts")
    assert st.manifest["models"]["tuned"]["path"].endswith("chat-sft-upper/tuned")
    assert "planted layers: [2, 3]" in text
    from alignloc.analyses.shift import layer_shift

    rows = {r["layer"]: r for r in layer_shift(st)}
    # chat-sft-upper trains only layers 2-3: layers below are bit-identical, so no shift at all
    assert rows[0]["relative_l2"] == 0.0 and rows[1]["relative_l2"] == 0.0
    assert rows[2]["relative_l2"] > 0.05 and rows[3]["relative_l2"] > rows[2]["relative_l2"]


@pytest.mark.slow
def test_zoo_reference_in_capture(zoo_tiny, tmp_path, capsys):
    out = tmp_path / "acts"
    assert main(["capture", "zoo:refusal-lora-L1", "--sites", "mlp_out", "--out", str(out)]) == 0
    st = open_store(out)
    kinds = {p.kind for p in st.prompts}
    assert st.n_prompts > 100 and {"knowledge", "behavior"} <= kinds
    assert st.manifest["models"]["base"]["ref"] == "zoo:refusal-lora-L1:base"
    shift = [(st.get("tuned", "mlp_out", layer=L) - st.get("base", "mlp_out", layer=L)).abs().max().item()
             for L in range(4)]
    assert shift[0] == 0.0 and shift[1] > 0  # the LoRA sits on layer 1: layer 0 is untouched
    assert main(["capture", "zoo:base", "--out", str(tmp_path / "x")]) == 2
    assert "is a base model" in capsys.readouterr().err
