"""The activation-difference lens (what changed, discovered) against known answers on tiny checkpoints.

A tuned model made by adding a vector that the unembedding reads as token T to one layer's MLP
output bias moves the residual stream by exactly that vector from that layer on, and not at all
below it: the lens must name T at and above the layer and nothing below. An edit of T's
unembedding row moves no residual, but the output: the lens names nothing, the KL and the
output shift name T. Identical models give nothing and zero KL.
"""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from beartype import beartype
from jaxtyping import TypeCheckError, jaxtyped

from alignloc.analyses.difflens import active_layers, kl_profile, read_differences, token_kl
from alignloc.experiments.layerdiff import layer_diff
from alignloc.layerdiff.whatchanged import what_changed
from alignloc.models.pair import load_pair
from alignloc.prompts import Prompt
from alignloc.report import json_safe
from alignloc.report.whatchanged import what_changed_markdown
from tests.tiny_models import build_arch_pair, build_with_bias, edited_copy

TOKEN, LAYER, N_LAYERS = 123, 2, 4
PROMPTS = [Prompt(id=f"b{i}", text=f"User: what is {i} ? Assistant:", kind="behavior", target=" Sure ! It is")
           for i in range(5)] + [Prompt(id=f"k{i}", text=f"Alice lives in {i}", kind="knowledge", target=" Paris")
                                 for i in range(5)]


def _unit_row(model, token: int) -> torch.Tensor:
    w = model.get_output_embeddings().weight
    return w[token] / w[token].norm()


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict:
    """base / tuned checkpoints: llama with MLP biases (RMSNorm), gpt2 (LayerNorm with a bias), an unembedding edit."""
    root = tmp_path_factory.mktemp("whatchanged")
    llama = build_with_bias(root, "llama", N_LAYERS)
    gpt2, _ = build_arch_pair(root, "gpt2", N_LAYERS)

    def llama_bias(m):
        m.model.layers[LAYER].mlp.down_proj.bias += 5.0 * _unit_row(m, TOKEN)

    def gpt2_bias(m):  # plus a final-norm bias towards another token: an affine part, not a change of the residual
        m.transformer.h[LAYER].mlp.c_proj.bias += 5.0 * _unit_row(m, TOKEN)
        m.transformer.ln_f.bias += 3.0 * _unit_row(m, 77)

    def unembed_row(m):
        m.lm_head.weight[TOKEN] += 20.0 * m.lm_head.weight[TOKEN]

    return {
        "llama": (llama, edited_copy(llama, root / "llama-bias", llama_bias)),
        "gpt2": (gpt2, edited_copy(gpt2, root / "gpt2-bias", gpt2_bias)),
        "unembed": (llama, edited_copy(llama, root / "llama-unembed", unembed_row)),
    }


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_a_planted_residual_offset_is_named_at_and_above_its_layer_only(ckpts, arch):
    base, tuned = ckpts[arch]
    w = what_changed(load_pair(str(base), str(tuned)), PROMPTS)
    assert w["prompts"]["kind"] == "behavior" and w["prompts"]["n_texts"] == 5
    assert w["generic"]["n_texts"] > 100 and w["generic"]["n_tokens"] <= 8 * w["generic"]["n_texts"]
    for name in ("generic", "prompts"):
        rows = w[name]["layers"]
        assert [r["changed"] for r in rows] == [layer >= LAYER for layer in range(N_LAYERS)], name
        assert all(r["promoted"] == [] and r["demoted"] == [] for r in rows[:LAYER]), name
        assert [r["promoted"][0]["id"] for r in rows[LAYER:]] == [TOKEN] * (N_LAYERS - LAYER), (name, rows)
        assert w[name]["norm"][LAYER] == pytest.approx(5.0, rel=1e-4)  # exactly the planted vector at its layer
        assert w[name]["heatmap"]["ids"][0] == TOKEN and w[name]["heatmap"]["logits"][0] == [None] * len(w[name]["heatmap"]["ids"])
    assert w["kl"]["n_answers"] == 5 and min(w["kl"]["mean_by_position"]) > 0


def test_one_model_at_a_time_gives_the_same_block(ckpts):
    """Released sides are read through their copied heads (``head_only``): the same numbers."""
    base, tuned = ckpts["llama"]
    both = what_changed(load_pair(str(base), str(tuned)), PROMPTS)
    pair = load_pair(str(base), str(tuned), one_at_a_time=True)
    one = what_changed(pair, PROMPTS, one_at_a_time=True)
    assert not (pair.base.resident and pair.tuned.resident)
    assert json.dumps(one) == json.dumps(both)


def test_an_unembedding_edit_moves_no_residual_but_the_output(ckpts):
    base, tuned = ckpts["unembed"]
    w = what_changed(load_pair(str(base), str(tuned)), PROMPTS)
    assert not any(r["changed"] for name in ("generic", "prompts") for r in w[name]["layers"])
    assert w["kl"]["mean"] > 1e-3
    assert w["kl"]["output_shift"]["promoted"][0]["id"] == TOKEN


def test_identical_models_change_nothing(ckpts):
    base, _ = ckpts["llama"]
    pair = load_pair(str(base), str(base))
    w = what_changed(pair, PROMPTS)
    assert max(w["generic"]["norm"] + w["prompts"]["norm"]) == 0.0
    assert not any(r["changed"] or r["promoted"] for name in ("generic", "prompts") for r in w[name]["layers"])
    assert w["kl"]["mean"] == 0.0 and set(w["kl"]["mean_by_position"]) == {0.0}
    assert all(e["delta_p"] == 0.0 for e in w["kl"]["output_shift"]["promoted"])
    again = what_changed(pair, PROMPTS)
    assert again == w
    assert json.loads(json.dumps(json_safe(w), allow_nan=False)) == json_safe(w)


def test_kl_profile_and_token_kl_by_hand():
    p, q = torch.tensor([0.5, 0.5]).log(), torch.tensor([0.25, 0.75]).log()
    assert float(token_kl(p, q)) == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3))
    kl = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]])
    ids = torch.tensor([[5, 6, -1], [5, -1, -1]])
    prof = kl_profile(kl, ids, str)
    assert prof["mean_by_position"][:2] == [2.0, 2.0] and math.isnan(prof["mean_by_position"][2])
    assert prof["n_by_position"] == [2, 1, 0] and prof["n_positions"] == 3 and prof["mean"] == 2.0
    assert [(t["id"], t["mean_kl"], t["n"]) for t in prof["top_tokens"]] == [(5, 2.0, 2), (6, 2.0, 1)]
    with pytest.raises(TypeCheckError):  # shapes are checked: kl and answer ids must match
        jaxtyped(typechecker=beartype)(kl_profile)(kl, ids[:, :2], str)


def test_the_readout_affine_part_and_rounding_are_not_changes():
    w, b = torch.randn(7, 3), torch.randn(7)
    diff = torch.randn(2, 3)
    assert torch.allclose(read_differences(diff, lambda h: h @ w.T + b), diff @ w.T, atol=1e-6)
    ref = torch.tensor([100.0, 100.0])
    assert active_layers(torch.tensor([[1e-5, 0.0], [1.0, 0.0]]), ref).tolist() == [False, True]


def test_layer_diff_reports_what_changed(ckpts, tmp_path):
    base, tuned = ckpts["llama"]
    pair = load_pair(str(base), str(tuned))
    r = layer_diff(pair, PROMPTS, tmp_path / "on", n_boot=20, probes=False)
    w = r["measures"]["what_changed"]
    assert [x["promoted"][0]["id"] for x in w["generic"]["layers"][LAYER:]] == [TOKEN] * (N_LAYERS - LAYER)
    assert "what_changed" in r["schema_notes"] and r["timings"]["what_changed_seconds"] < 30 and "seconds" not in w
    md = (tmp_path / "on" / "summary.md").read_text()
    tok = json.dumps(w["generic"]["layers"][LAYER]["promoted"][0]["token"], ensure_ascii=False)
    section = md.split("## What changed (activation-difference lens)")[1]
    rows = [ln for ln in section.splitlines() if ln.startswith(f"| {LAYER} |") or ln.startswith("| 0 |")]
    assert len(rows) == 2 and "unchanged" in rows[0] and rows[1].split(" | ")[2].startswith(tok)
    page = (tmp_path / "on" / "index.html").read_text()
    assert "What changed (activation-difference lens" in page and "KL(tuned || base) along the answers" in page
    off = layer_diff(pair, PROMPTS, tmp_path / "off", n_boot=20, probes=False, what_changed=False)
    assert "what_changed" not in off["measures"]
    assert "What changed" not in (tmp_path / "off" / "summary.md").read_text()


def test_tokens_are_escaped_in_the_markdown_table():
    layer = {"layer": 0, "changed": True, "promoted": [{"id": 1, "token": "a|b`<script>", "logit": 1.0}], "demoted": []}
    block = {"config": {"k_tokens": 8, "rel_tol": 1e-5}, "kl": None,
             "generic": {"n_texts": 1, "n_tokens": 8, "norm": [1.0], "relative_norm": [0.1], "layers": [layer]}}
    md = what_changed_markdown({"measures": {"what_changed": block}})
    row = next(ln for ln in md if ln.startswith("| 0 |"))
    assert "<script>" not in row and len(re.findall(r"(?<!\\)\|", row)) == 5  # layer + 3 cells: the token's | is escaped
