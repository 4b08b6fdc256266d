"""Where each stage of a training run lands: layer-diff along a chain of checkpoints.

    summary = trajectory(["ckpt0", "ckpt1", "ckpt2"], "traj/", prompts)

A post-training pipeline is a chain (pretrained -> SFT -> DPO -> ...). One base-vs-final layer-diff
mixes the stages; comparing each step ``k-1 -> k`` says where *that* stage wrote, and comparing the
base with each stage ``0 -> k`` says where the changes so far add up (or cancel). Both are ordinary
layer-diff reports (``DIR/step-k``, ``DIR/base-k``; ``base-1`` is ``step-1``, written twice) on one
prompt set; ``trajectory.json`` keeps the per-layer lines of each, and ``trajectory.html`` one
figure, stage x layer (drawn by ``alignloc.report.trajectory``). Floors come from each comparison's own background (no control pair).

Checkpoints are any model reference layer-diff takes (``models.refs``): a local HF directory, a hub
id, ``zoo:NAME[:base|tuned]`` (an organism's tuned side unless a side is named) or a peft adapter
directory, merged onto the first checkpoint. Models are loaded once and dropped when no later
comparison needs them (the first checkpoint, and the current stage, stay).
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable
from pathlib import Path

from alignloc import __version__
from alignloc.errors import UsageError
from alignloc.experiments.layerdiff import layer_diff
from alignloc.layerdiff.answers import ANSWERS_FILE
from alignloc.layerdiff.config import LayerDiffConfig
from alignloc.models.load_options import LoadOptions
from alignloc.models.pair import LoadedModel, ModelPair, check_pair, load_model, load_pair
from alignloc.models.refs import resolve_ref, split_zoo
from alignloc.prompts import Prompt, prompts_hash

FILES = ("trajectory.json", "trajectory.html", "trajectory.png")


def stage_dirs(n_stages: int) -> list[str]:
    """``step-1 .. step-n`` and ``base-1 .. base-n``: one report folder each."""
    return [f"{kind}-{k}" for k in range(1, n_stages + 1) for kind in ("step", "base")]


def trajectory_prompts(refs: list[str]) -> list[Prompt]:
    """The bundled prompts of the last checkpoint that is a zoo organism (UsageError if none is)."""
    from alignloc import zoo

    for ref in reversed(refs):
        z = split_zoo(ref)
        if z is not None and z[0] not in zoo.BASES:
            return zoo.organism_prompts(z.name, z.size)
    raise UsageError("--prompts is required unless a checkpoint is a zoo organism (zoo:NAME; give a JSONL prompt file)")


def stage_summary(report: dict, where: str) -> dict:
    """The per-layer lines of one layer-diff report that a trajectory compares across stages."""
    m, v = report["measures"], report["verdict"]
    weights = [x["relative_frobenius"] for x in m["weights"]["layers"]]
    out = {
        "report": where,
        "weights": weights,
        "residual_shift": m["shift"]["relative_l2_increment"]["mean"],
        "residual_shift_total": m["shift"]["relative_l2"]["mean"],
        "lens": m["lens"]["kl_increment"]["mean"],
        "lens_kl": m["lens"]["kl"]["mean"],
        "top_weight_layer": max(range(len(weights)), key=lambda i: weights[i]) if any(weights) else None,
        "changed_layers": v["changed_layers"],
        "verdict": v["summary"],
    }
    w = m.get("what_changed")
    if w:  # the tokens the last changed layer's mean difference promotes on generic text
        changed = [r for r in w["generic"]["layers"] if r["changed"]]
        out["what_changed"] = [e["token"] for e in changed[-1]["promoted"][:5]] if changed else []
    return out


def chain_prompts(refs: list[str], out: str | Path, suite: str | None, chat_template: str, *, answer_tokens: int = 16,
                  batch_size: int = 16, options: LoadOptions | None = None, log: Callable[[str], None] | None = None) -> tuple[list[Prompt], dict | None]:
    """The built-in suites for a chain with no prompt file: chat turns rendered with the last stage's template (as
    layer-diff does for its pair), and behavior targets written by the last stage (its greedy answers; the first
    checkpoint's are the foils), so every comparison scores where the final behavior arises. ``options``: how
    the models are loaded (``LoadOptions``). Answers are stored
    in ``out/answers.json`` and reused (``layerdiff.answers``). Returns the prompts and the answers block."""
    from alignloc.layerdiff.answers import answer_targets
    from alignloc.suites.prepare import choose_prompts

    opts = options or LoadOptions()
    chosen = choose_prompts(refs[0], refs[-1], None, suite, chat_template, allow_pickle=opts.allow_pickle,
                            trust_remote_code=opts.trust_remote_code, reserve=answer_tokens)
    for line in chosen.describe():
        (log or (lambda _m: None))(line)
    if not chosen.chats:
        return chosen.prompts, None
    pair = load_pair(refs[0], refs[-1], opts, one_at_a_time=True)
    prompts, block = answer_targets(pair, chosen.prompts, out, answer_tokens=answer_tokens,
                                    template=chosen.template.record(), bos=chosen.bos, batch_size=batch_size, log=log,
                                    one_at_a_time=True)
    del pair
    gc.collect()
    return prompts, block


def trajectory(refs: list[str], out: str | Path, prompts: list[Prompt] | None = None, *, n_boot: int = 1000,
               seed: int = 0, probes: bool = False, what_changed: bool = True, batch_size: int = 16,
               backend: str = "hf", overwrite: bool = False, options: LoadOptions | None = None,
               log: Callable[[str], None] | None = None, answers: dict | None = None) -> dict:
    """layer-diff of every step and of the base against every stage of ``refs`` (see the module
    docstring); writes the reports, ``trajectory.json`` and the figure under ``out``; returns the summary.
    ``options``: how the checkpoints are loaded (``LoadOptions``). ``answers``: the block of ``chain_prompts`` when the prompts' targets are the last stage's own answers."""
    from alignloc.report import REPORT_FILES, json_safe, write_report
    from alignloc.report.trajectory import write_trajectory_figure
    from alignloc.store.outputs import check_out_dir, write_outputs

    if len(refs) < 2:
        raise UsageError(f"a trajectory needs at least two checkpoints (CKPT0 CKPT1 ...), got {len(refs)}")
    out, log = Path(out), log or (lambda _m: None)
    check_out_dir(out, (*FILES, ANSWERS_FILE, *stage_dirs(len(refs) - 1)), overwrite=overwrite)
    for d in stage_dirs(len(refs) - 1):
        check_out_dir(out / d, (*REPORT_FILES, "acts"), overwrite=overwrite)
    prompts = prompts if prompts is not None else trajectory_prompts(refs)
    opts = options or LoadOptions()
    config = LayerDiffConfig(n_boot=n_boot, seed=seed, probes=probes, batch_size=batch_size, backend=backend,
                             what_changed=what_changed)
    models: dict[int, LoadedModel] = {}
    hashes: dict[int, str] = {}

    def model(k: int) -> LoadedModel:
        if k not in models:
            adapter = k > 0 and split_zoo(refs[k]) is None and resolve_ref(refs[k], opts.allow_pickle).is_adapter
            models[k] = load_pair(refs[0], refs[k], opts).tuned if adapter else load_model(refs[k], opts)
            hashes[k] = models[k].weights_hash
        return models[k]

    def compare(i: int, k: int, where: str) -> dict:
        check_pair(model(i), model(k))
        log(f"layer-diff {refs[i]} -> {refs[k]}: {out / where}")
        pair = ModelPair(base=model(i), tuned=model(k), name=f"{where}: {refs[i]} -> {refs[k]}")
        return layer_diff(pair, prompts, out / where, config, overwrite=overwrite)

    stages = []
    for k in range(1, len(refs)):
        step = compare(k - 1, k, f"step-{k}")
        if k == 1:
            base = step
            write_report(base, out / "base-1")
        else:
            base = compare(0, k, f"base-{k}")
        stages.append({"stage": k, "ref": refs[k], "step": stage_summary(step, f"step-{k}/report.json"),
                       "from_base": stage_summary(base, f"base-{k}/report.json")})
        for j in [j for j in models if j not in (0, k)]:  # no later comparison reads it
            del models[j]
        gc.collect()
    skipped = write_trajectory_figure(stages, out)
    summary = {
        "kind": "trajectory", "alignloc_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "checkpoints": [{"stage": k, "ref": r, "weights_sha256": hashes[k]}
                        for k, r in enumerate(refs)],
        "prompts": {"n": len(prompts), "sha256": prompts_hash(prompts)},
        "settings": {"n_boot": n_boot, "seed": seed, "probes": probes, "what_changed": what_changed, "backend": backend},
        "stages": stages,
        "answers": answers,
        "figure": {"html": "trajectory.html", "png": None if skipped else "trajectory.png", "png_skipped": skipped},
    }
    write_outputs(out, {"trajectory.json": json.dumps(json_safe(summary), indent=1, allow_nan=False).encode()})
    return summary
