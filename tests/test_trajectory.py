"""trajectory on a tiny chain of checkpoints whose stages are known: base, then layer 1 changed, then
layer 3 changed on top. Step 1 must land on layer 1, step 2 on layer 3, and base -> 2 on both."""

from __future__ import annotations

import json

import pytest
import torch

from alignloc.cli import main
from alignloc.errors import UsageError
from alignloc.experiments.trajectory import trajectory
from tests.tiny_models import build_arch_pair, edited_copy

FIRST, SECOND = 1, 3


def _perturb(layer: int, seed: int):
    def edit(m):
        g = torch.Generator().manual_seed(seed)
        for lin in (m.model.layers[layer].mlp.down_proj, m.model.layers[layer].self_attn.o_proj):
            w = lin.weight
            w += 2.0 * w.std() * torch.randn(w.shape, generator=g)
    return edit


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("chain")
    base, _ = build_arch_pair(root, "llama", n_layers=4)
    one = edited_copy(base, root / "stage1", _perturb(FIRST, 1))
    two = edited_copy(one, root / "stage2", _perturb(SECOND, 2))
    return [str(base), str(one), str(two)]


def _prompts(path):
    recs = [{"id": f"k{i}", "text": f"Alice number {i} lives in", "kind": "knowledge", "target": " Paris"} for i in range(8)]
    recs += [{"id": f"b{i}", "text": f"User: what is {i} ? Assistant:", "kind": "behavior", "target": " Sure !"} for i in range(8)]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def test_each_stage_lands_where_it_was_made(chain, tmp_path, capsys):
    out = tmp_path / "traj"
    rc = main(["trajectory", *chain, "--prompts", str(_prompts(tmp_path / "p.jsonl")), "--out", str(out), "--n-boot", "50"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    t = json.loads((out / "trajectory.json").read_text())
    s1, s2 = t["stages"]
    for s, layers in ((s1["step"], [FIRST]), (s2["step"], [SECOND]), (s2["from_base"], [FIRST, SECOND]), (s1["from_base"], [FIRST])):
        assert [i for i, w in enumerate(s["weights"]) if w > 0] == layers, s["weights"]
        assert s["changed_layers"] == layers, s
    assert s1["step"]["top_weight_layer"] == FIRST and s2["step"]["top_weight_layer"] == SECOND
    for d in ("step-1", "base-1", "step-2", "base-2"):
        assert json.loads((out / d / "report.json").read_text())["measures"]["what_changed"]["generic"]["layers"]
    assert (out / "trajectory.html").stat().st_size > 10_000
    assert (out / "trajectory.png").is_file() == (t["figure"]["png"] is not None)
    assert f"step changed layers [{SECOND}]" in cap.out


def test_one_checkpoint_is_a_usage_error(chain, tmp_path, capsys):
    assert main(["trajectory", chain[0], "--out", str(tmp_path / "x")]) == 2
    assert "at least two checkpoints" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_without_a_prompt_file_the_chain_runs_the_suites_on_the_last_stage_s_answers(chain, tmp_path, capsys):
    out = tmp_path / "suites"
    assert main(["trajectory", *chain, "--suite", "chat", "--out", str(out), "--n-boot", "20", "--answer-tokens", "4"]) == 0
    err = capsys.readouterr().err
    assert "prompts: built-in suites chat" in err and "answers: the tuned then the base model decode" in err
    t = json.loads((out / "trajectory.json").read_text())
    stored = json.loads((out / "answers.json").read_text())
    assert t["answers"]["n"] == len(stored["answers"]) >= 50 and t["answers"]["settings"]["answer_tokens"] == 4
    # the targets are the last stage's answers, in every comparison (this tiny model's short context drops the longer chats)
    step1 = json.loads((out / "step-1" / "report.json").read_text())
    assert step1["prompts"]["by_kind"] == {"behavior": t["answers"]["n"]}
    assert [s["stage"] for s in t["stages"]] == [1, 2] and t["stages"][1]["step"]["top_weight_layer"] == SECOND
    assert main(["trajectory", *chain, "--suite", "chat", "--out", str(out), "--n-boot", "20", "--answer-tokens", "4",
                 "--overwrite"]) == 0  # a rerun reads the answers back
    assert "reused" in capsys.readouterr().err and (out / "answers.json").read_text() == json.dumps(stored, indent=1, ensure_ascii=False) + "\n"


def test_the_library_refuses_a_single_checkpoint_before_loading(tmp_path):
    with pytest.raises(UsageError, match="at least two checkpoints"):
        trajectory(["no/such/model"], tmp_path / "y", [])
    assert not (tmp_path / "y").exists()


def test_stage_labels_tell_checkpoints_apart():
    from alignloc.report.trajectory import stage_labels

    assert stage_labels(["/z/chat-sft/tuned", "/z/chat-dpo/tuned/"]) == ["chat-sft/tuned", "chat-dpo/tuned"]
    assert stage_labels(["a/sft", "b/dpo"]) == ["sft", "dpo"]
    assert stage_labels(["zoo:chat-sft-upper"]) == ["zoo:chat-sft-upper"]
    assert stage_labels(["x/" + "y" * 40]) == ["y" * 30]
