"""DPO for the ``dpo-polite`` organism, through trl's ``DPOTrainer`` (offline, CPU, no loggers).

The zoo tokenizer adds no special tokens, so each prompt starts with the literal ``<bos>`` (an
added token: it is matched before pre-tokenization), which gives the same ids as the rest of the
zoo (``<bos>`` prepended). trl appends ``<eos>`` to chosen and rejected completions.
The loss is trl's sigmoid DPO loss, plus its ``sft`` term (NLL of the chosen completion) when
``RecipeSpec.dpo_sft_weight > 0``: without it the wider ``small`` base satisfied the preference by
pushing the rejected ``" ."`` into garbage tokens instead of learning ``" please"``.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Callable, Sequence

from transformers import PreTrainedModel

from alignloc.zoo.config import SizeConfig
from alignloc.zoo.pretrain import clone_model


def train_dpo(
    model: PreTrainedModel,
    tok,
    triples: Sequence[tuple[str, str, str]],
    cfg: SizeConfig,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Train ``model`` in place with DPO on (prompt, chosen, rejected) texts; return a record."""
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback
    from trl import DPOConfig, DPOTrainer

    r = cfg.recipes
    # an explicit frozen reference (trl would otherwise reload one from config._name_or_path)
    ref = clone_model(model).requires_grad_(False)
    rows = [{"prompt": tok.bos_token + p, "chosen": c, "rejected": rj} for p, c, rj in triples]
    with tempfile.TemporaryDirectory(prefix="alignloc-dpo-") as out, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers 5 renames inside trl
        args = DPOConfig(
            output_dir=out,
            report_to=[],
            per_device_train_batch_size=r.batch_size,
            num_train_epochs=r.dpo_epochs,
            learning_rate=r.dpo_lr,
            beta=r.dpo_beta,
            loss_type=["sigmoid", "sft"] if r.dpo_sft_weight else ["sigmoid"],
            loss_weights=[1.0, r.dpo_sft_weight] if r.dpo_sft_weight else None,
            lr_scheduler_type="cosine",
            warmup_steps=5,
            save_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
            use_cpu=True,
            seed=cfg.seed,
            data_seed=cfg.seed,
            max_length=64,
            dataloader_num_workers=0,
        )
        level = logging.getLogger("transformers").level
        logging.getLogger("transformers").setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                trainer = DPOTrainer(
                    model=model,
                    ref_model=ref,
                    args=args,
                    train_dataset=Dataset.from_list(rows),
                    processing_class=tok,
                )
                trainer.remove_callback(PrinterCallback)  # no metrics dict on stdout
                result = trainer.train()
        finally:
            logging.getLogger("transformers").setLevel(level)
    model.eval()
    if log:
        log(f"  dpo: {result.global_step} steps, loss {result.training_loss:.3f}")
    return {
        "trainer": "trl.DPOTrainer",
        "loss_type": list(args.loss_type),
        "loss_weights": args.loss_weights,
        "beta": r.dpo_beta,
        "steps": int(result.global_step),
        "train_loss": round(float(result.training_loss), 4),
        "epochs": r.dpo_epochs,
        "lr": r.dpo_lr,
        "n_pairs": len(rows),
    }
