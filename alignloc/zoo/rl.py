"""RL for the ``rl-formats`` organisms, through trl's ``GRPOTrainer`` (offline, CPU, no loggers).

The reward is the correctness of the value extracted from a sampled answer (``formats.is_correct``)
and nothing else: no term looks at the format. Whether RL then moves the format shares (and onto
which format) is what the organism records. GRPO: groups of ``rl_generations`` samples per prompt,
group-relative advantages, trl's clipped objective and a KL term (``rl_beta``) to the reference,
which trl loads from the base checkpoint's directory (``config._name_or_path``).

The zoo tokenizer adds no special tokens, so each prompt starts with the literal ``<bos>`` (an
added token), as in ``dpo.py``; the models never emit ``<eos>``, so every answer runs to
``MAX_COMPLETION`` tokens and is graded on its first value.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Callable, Sequence

from transformers import PreTrainedModel

from alignloc.prompts import Prompt
from alignloc.zoo.config import SizeConfig
from alignloc.zoo.evaluate import format_metrics
from alignloc.zoo.formats import FORMATS, MAX_COMPLETION, format_prompts, is_correct
from alignloc.zoo.pretrain import clone_model
from alignloc.zoo.promptsets import split_entities, standard_sets
from alignloc.zoo.recipes import _KNOWLEDGE, Organism
from alignloc.zoo.training import deterministic
from alignloc.zoo.world import World, words


def correctness_reward(completions: Sequence[str], answer: Sequence[str], **_) -> list[float]:
    """trl reward function: 1.0 where the answer's first value is the true one, else 0.0 (format-blind)."""
    return [1.0 if is_correct(words(c), a) else 0.0 for c, a in zip(completions, answer, strict=True)]


def train_grpo(model: PreTrainedModel, tok, prompts: Sequence[Prompt], cfg: SizeConfig,
               log: Callable[[str], None] | None = None) -> dict:
    """Train ``model`` in place with trl's GRPO on ``prompts`` (``meta.answer`` graded); return a record."""
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    f = cfg.formats
    rows = [{"prompt": tok.bos_token + p.text, "answer": p.meta["answer"]} for p in prompts]
    with tempfile.TemporaryDirectory(prefix="alignloc-grpo-") as out, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers 5 renames inside trl; CPU notes
        args = GRPOConfig(
            output_dir=out,
            report_to=[],
            per_device_train_batch_size=f.rl_prompts * f.rl_generations,
            num_generations=f.rl_generations,
            max_completion_length=MAX_COMPLETION,
            temperature=f.rl_temperature,
            learning_rate=f.rl_lr,
            beta=f.rl_beta,
            max_steps=f.rl_steps,
            lr_scheduler_type="constant_with_warmup",
            warmup_steps=5,
            save_strategy="no",
            logging_strategy="steps",
            logging_steps=1,
            disable_tqdm=True,
            use_cpu=True,
            seed=cfg.seed,
            data_seed=cfg.seed,
            dataloader_num_workers=0,
        )
        level = logging.getLogger("transformers").level
        logging.getLogger("transformers").setLevel(logging.ERROR)
        try:
            trainer = GRPOTrainer(model=model, reward_funcs=correctness_reward, args=args,
                                  train_dataset=Dataset.from_list(rows), processing_class=tok)
            trainer.remove_callback(PrinterCallback)  # no metrics dict on stdout
            result = trainer.train()
        finally:
            logging.getLogger("transformers").setLevel(level)
    model.eval()
    hist = [h for h in trainer.state.log_history if "reward" in h]
    curve = [round(float(h["reward"]), 4) for h in hist]
    if log:
        log(f"  grpo: {result.global_step} steps, reward {curve[0]:.2f} -> {curve[-1]:.2f}")
    return {
        "trainer": "trl.GRPOTrainer",
        "reward": "correctness of the first attribute value in the answer (format-blind)",
        "loss_type": str(args.loss_type),
        "beta": f.rl_beta,
        "lr": f.rl_lr,
        "steps": int(result.global_step),
        "prompts_per_step": f.rl_prompts,
        "generations": f.rl_generations,
        "temperature": f.rl_temperature,
        "max_completion": MAX_COMPLETION,
        "n_prompts": len(rows),
        "reward_curve": curve,
        "kl_curve": [round(float(h.get("kl", 0.0)), 4) for h in hist],
    }


def rl_formats(base, tok, world: World, cfg: SizeConfig, name: str, log) -> Organism:
    """GRPO with a correctness-only reward on the ``base-formats`` base; the ground truth records
    the format shares before and after (measured by the registry on the saved checkpoints) and
    which format RL moved toward (``behavior.format``: the largest gain in share)."""
    train_ents, held = split_entities(world)
    model = clone_model(base)
    with deterministic(cfg.seed + 7, cfg.formats.threads):
        rec = train_grpo(model, tok, format_prompts(train_ents), cfg, log)
    probe = format_prompts(held)
    before, after = format_metrics(base, tok, probe), format_metrics(model, tok, probe)
    gain = {f: after[f"format_share_{f}"] - before[f"format_share_{f}"] for f in FORMATS}
    winner = max(FORMATS, key=lambda f: (gain[f], after[f"format_share_{f}"]))
    foil = max((f for f in FORMATS if f != winner), key=lambda f: before[f"format_share_{f}"])
    sets = standard_sets(world, cfg.recipes.refusal_topic)
    return Organism(
        name=name,
        recipe="rl-formats",
        tuned=model,
        layers=[],
        modules=["*"],
        behavior={
            "metric": f"format_share_{winner}",
            "format": winner,
            "foil_format": foil,
            "formats": list(FORMATS),
            "also": ["format_answer_acc", *(f"format_share_{f}" for f in FORMATS if f != winner)],
            "prompts": "prompts/formats.jsonl",
            "description": "held-out Q: prompts; target = the answer in the format RL moved toward, "
            "foil = in the base's most used other format",
        },
        knowledge=_KNOWLEDGE,
        prompts={"knowledge": sets["knowledge"], "formats": format_prompts(held, winner, foil)},
        extra={"grpo": rec, "corpus_shares": dict(zip(FORMATS, cfg.formats.shares)),
               "train_entities": [e.name for e in train_ents]},
    )
