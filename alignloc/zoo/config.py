"""Build sizes of the zoo as plain tables (world, base models, recipe budgets).

``tiny`` builds the whole default set in a few minutes on 2 CPU cores (it is what the tests use);
``small`` has more entities, wider models and more steps for real experiments.

Measured on the tiny world (2 cores): with every other setting equal, an 8-layer model recalled
no more weak facts than the 4-layer base after the same passes (the early plateau, before the
subject lookup is learned, dominates at this scale). ``base-large`` therefore gets twice the
layers *and* more passes over the same corpus (recorded in its ``info.json``), which is what
makes it know clearly more weak facts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace

from alignloc.zoo.names import ZooError
from alignloc.zoo.pretrain import ModelSpec, PretrainSpec
from alignloc.zoo.world import WorldConfig

ZOO_FORMAT = 3  # 2: eager attention (CPU SDPA was ~70x slower); 3: prompts carry a `foil`; bump when the build changes in a way that invalidates cached organisms


@dataclass(frozen=True)
class RecipeSpec:
    """Budgets of the post-training recipes."""

    sft_epochs: int = 30
    sft_lr: float = 1e-2
    lora_rank: int = 8
    lora_epochs: int = 30
    lora_lr: float = 5e-3
    lora_replay: float = 0.0  # replayed facts made the refusal generalise worse to new entities
    edit_n: int = 5
    edit_epochs: int = 20
    edit_lr: float = 5e-3
    edit_retain: int = 200  # unedited facts rehearsed while editing
    dpo_epochs: int = 6
    # weight of trl's "sft" loss (NLL of the chosen answer, as in RPO) next to the DPO loss; with
    # pure DPO the small base met the preference by pushing " ." down into garbage tokens
    dpo_sft_weight: float = 1.0
    dpo_lr: float = 2e-3
    dpo_beta: float = 0.1
    control_epochs: int = 2
    control_lr: float = 1e-3
    batch_size: int = 32
    refusal_topic: str = "pet"


@dataclass(frozen=True)
class DriftSpec:
    """The hard tier (``drift.py``): ``control-drift`` is continued pretraining that moves every
    weight by about half its norm (``epochs``, ``lr``); a ``-drift`` organism reparametrizes each
    block so the drift's norm is at least ``margin`` x the planted delta's in planted blocks and
    ``ratio`` x the planted blocks' total change elsewhere. Only the hard tier's fingerprints
    include it."""

    epochs: int = 4
    lr: float = 1e-2
    margin: float = 1.1
    ratio: float = 1.3


@dataclass(frozen=True)
class FormatsSpec:
    """The format-amplification organisms (``formats.py``, ``rl.py``): a base pretrained on the world
    plus closed-book answers in three formats at ``shares`` (``qa_reps`` answers per known fact and
    pass), then RL (trl's GRPO; reward = correctness of the extracted value, never the format)."""

    shares: tuple[float, float, float] = (0.6, 0.3, 0.1)  # short, sentence, restate (formats.FORMATS)
    qa_reps: float = 1.0
    # the bases: base's and base-large's models with fewer passes, trained with one thread (on 2 shared
    # cores a 2-thread training step ran 12x slower than a 1-thread one: 6.2 s against 0.50 s)
    base_epochs: int = 8
    large_epochs: int = 8
    threads: int = 1
    rl_steps: int = 60  # the small base collapsed within 40 steps in a trial run
    rl_lr: float = 1e-3
    rl_beta: float = 0.04  # KL to the base (reference) model
    rl_prompts: int = 16  # prompts per step (x ``rl_generations`` samples each)
    rl_generations: int = 8
    rl_temperature: float = 1.0


@dataclass(frozen=True)
class LimaSpec:
    """``chat-lima`` (``lima.py``): ``n_chat`` curated chat answers trained for ``epochs`` at ``lr``
    (all layers) and ``format_rows`` rows that open a chat answer with the marker on weak-prior train
    entities (loss on the marker only: no fact taught), plus ``kl_weight`` x KL(base || tuned) on
    ``replay_batch_size`` rows of pretraining text per step. Only the ``chat-lima`` fingerprints include it."""

    n_chat: int = 40
    # measured on the tiny base, 1 thread (small model: retention of the base's correct facts / format rate;
    # proxy at beta = 1 on a 1-thread base-large: behavior rate / fact recall vs large base):
    # lr 1e-2, 30 epochs, KL 1 (20 answers, 2 threads): 0.83 / 1.00; lr 2e-3, 30 epochs, KL 10: 0.964 / 0.99, proxy 0.77 / -2.3 pt;
    # lr 3e-3, 60 epochs, KL 20: 0.953 / 1.00, proxy 0.89 / -3.3 pt; these (KL 50): 0.953 / 1.00, proxy 0.84 / -2.3 pt
    # without format rows the format did not carry over to held-out entities on every machine: on an
    # AVX-512 build of base (weak recall 0.59) format 0.55 / retention 0.914 (seed 1000: 0.53 / 0.945;
    # 100 epochs 0.72 / 0.951; 80 answers x 80 epochs 0.80 / 0.963); 80 format rows: 0.996 / 0.968; 160: 1.00 / 0.974
    format_rows: int = 160
    epochs: int = 60
    lr: float = 3e-3
    batch_size: int = 8
    kl_weight: float = 50.0
    replay_batch_size: int = 32


@dataclass(frozen=True)
class SurfacingSpec:
    """``base-fmt`` and the format organisms (``fmtorgs.py``): the QA documents of ``base-fmt``'s corpus and the budget of the format SFT."""

    qa_docs: int = 500  # multi-question QA documents per corpus pass (plain or rare format)
    rare_frac: float = 0.2  # of the QA documents written in the rare format (~2.7% of all documents)
    qa_per_doc: tuple[int, int] = (2, 4)
    pretrain_epochs: int = 6  # passes of continued pretraining of base on the corpus + QA documents
    pretrain_lr: float = 5e-3
    threads: int = 1
    # a light SFT: with chat-sft's budget (30 epochs at 1e-2) the format rose to 0.65 (not 0.48) but the
    # shift grew 3x and buried the surfaced direction (README, "Surfaced vs installed")
    sft_epochs: int = 20
    sft_lr: float = 5e-3
    replay: float = 2.0  # replayed strong-fact statements per SFT row

    def corpus(self) -> dict:
        """The fields that define ``base-fmt`` (its fingerprint): not the SFT budget."""
        return {k: v for k, v in asdict(self).items() if not k.startswith(("sft_", "replay"))}


@dataclass(frozen=True)
class SizeConfig:
    """Everything that defines one zoo size."""

    name: str
    world: WorldConfig
    base: ModelSpec
    base_train: PretrainSpec
    large: ModelSpec
    large_train: PretrainSpec
    recipes: RecipeSpec = field(default_factory=RecipeSpec)
    drift: DriftSpec = field(default_factory=DriftSpec)
    formats: FormatsSpec = field(default_factory=FormatsSpec)
    lima: LimaSpec = field(default_factory=LimaSpec)
    surfacing: SurfacingSpec = field(default_factory=SurfacingSpec)  # base-fmt and the format-* organisms
    seed: int = 0

    def fingerprint(self, *parts: object) -> str:
        """A short hash of this config (plus extra parts): cached builds must match it."""
        blob = json.dumps([ZOO_FORMAT, asdict(self), *map(str, parts)], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


SIZES: dict[str, SizeConfig] = {
    "tiny": SizeConfig(
        name="tiny",
        world=WorldConfig(
            seed=0,
            n_strong=40,
            n_weak=80,
            n_novel=100,
            strong_reps=12,
            weak_reps=0.5,
            passages_per_strong=6,
            passages_per_novel=8,
            conflict_frac=0.35,
        ),
        base=ModelSpec(arch="llama", n_layers=4, d_model=64, n_heads=4, d_ff=256),
        base_train=PretrainSpec(epochs=12, batch_size=32, lr=1e-2, warmup=50),
        large=ModelSpec(
            arch="llama", n_layers=8, d_model=64, n_heads=4, d_ff=256, scaled_init=True
        ),
        large_train=PretrainSpec(epochs=20, batch_size=32, lr=1e-2, warmup=50),
    ),
    "small": SizeConfig(
        name="small",
        world=WorldConfig(
            seed=0,
            n_strong=100,
            n_weak=200,
            n_novel=200,
            strong_reps=12,
            weak_reps=0.5,
            passages_per_strong=6,
            passages_per_novel=8,
            conflict_frac=0.35,
        ),
        base=ModelSpec(arch="llama", n_layers=4, d_model=128, n_heads=4, d_ff=512),
        base_train=PretrainSpec(epochs=16, batch_size=32, lr=5e-3, warmup=100),
        large=ModelSpec(
            arch="llama", n_layers=8, d_model=128, n_heads=4, d_ff=512, scaled_init=True
        ),
        large_train=PretrainSpec(epochs=28, batch_size=32, lr=5e-3, warmup=100),
        # more entities -> more steps per pass; the wider model wants smaller steps
        recipes=RecipeSpec(sft_epochs=12, sft_lr=5e-3, lora_lr=2e-3, dpo_lr=5e-4),
    ),
}


SEED_VARIANTS = 2  # tiny-s1, tiny-s2: the tiny size with another world and training seed (benchmark seeds)
SIZES.update({f"tiny-s{k}": replace(SIZES["tiny"], name=f"tiny-s{k}", seed=k, world=replace(SIZES["tiny"].world, seed=k))
              for k in range(1, SEED_VARIANTS + 1)})


def seeded_sizes(size: str, seeds: int) -> list[str]:
    """``size`` and its first ``seeds - 1`` seed variants (``tiny``, ``tiny-s1``, ...): the same recipes in
    another world, trained from other seeds; ``ZooError`` where the size has fewer variants."""
    out = [size] + [f"{size}-s{k}" for k in range(1, seeds)]
    missing = [s for s in out if s not in SIZES]
    if seeds < 1 or missing:
        have = [s for s in SIZES if s == size or s.startswith(f"{size}-s")]
        raise ZooError(f"--seeds {seeds}: size {size!r} has {len(have)} seed(s) ({', '.join(have) or 'none'}); "
                       "ask for at most that many")
    return out


def size_config(size: str) -> SizeConfig:
    """The config of a size name; ``ZooError`` (a ValueError) lists the valid ones."""
    if size not in SIZES:
        raise ZooError(f"unknown zoo size {size!r} (use one of {', '.join(SIZES)})")
    return SIZES[size]
