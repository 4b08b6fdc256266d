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
from dataclasses import dataclass

from transformers import PreTrainedModel

from alignloc.zoo.config import SizeConfig
from alignloc.zoo.pretrain import clone_model


@dataclass(frozen=True)
class DPOSettings:
    """What one DPO run needs: batch, epochs, learning rate, beta, the weight of the SFT term on the
    chosen completion (0: plain sigmoid DPO), seed, and the longest row in tokens."""

    batch_size: int
    epochs: int
    lr: float
    beta: float
    sft_weight: float
    seed: int
    max_length: int = 64

    @classmethod
    def of(cls, cfg: SizeConfig) -> DPOSettings:
        """The synthetic zoo's settings for a size."""
        r = cfg.recipes
        return cls(r.batch_size, r.dpo_epochs, r.dpo_lr, r.dpo_beta, r.dpo_sft_weight, cfg.seed)


def train_dpo(
    model: PreTrainedModel,
    tok,
    triples: Sequence[tuple[str, str, str]],
    s: DPOSettings,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Train ``model`` in place with DPO on (prompt, chosen, rejected) texts; return a record."""
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback
    from trl import DPOConfig, DPOTrainer

    # an explicit frozen reference (trl would otherwise reload one from config._name_or_path)
    ref = clone_model(model).requires_grad_(False)
    rows = [{"prompt": tok.bos_token + p, "chosen": c, "rejected": rj} for p, c, rj in triples]
    with tempfile.TemporaryDirectory(prefix="alignloc-dpo-") as out, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers 5 renames inside trl
        args = DPOConfig(
            output_dir=out,
            report_to=[],
            per_device_train_batch_size=s.batch_size,
            num_train_epochs=s.epochs,
            learning_rate=s.lr,
            beta=s.beta,
            loss_type=["sigmoid", "sft"] if s.sft_weight else ["sigmoid"],
            loss_weights=[1.0, s.sft_weight] if s.sft_weight else None,
            lr_scheduler_type="cosine",
            warmup_steps=5,
            save_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
            use_cpu=True,
            seed=s.seed,
            data_seed=s.seed,
            max_length=s.max_length,
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
        "beta": s.beta,
        "steps": int(result.global_step),
        "train_loss": round(float(result.training_loss), 4),
        "epochs": s.epochs,
        "lr": s.lr,
        "n_pairs": len(rows),
    }
