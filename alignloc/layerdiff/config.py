"""``LayerDiffConfig``: the settings of one layer-diff run, as one value.

``layer_diff(pair, prompts, out, config=LayerDiffConfig(...))`` takes what to measure and how (bootstrap,
probes, batching, the causal tests and their budget, the verdict's thresholds); what the run reads and
writes (the control model, the store, the answers, overwrite) stays with the call. The command line builds
one from its options; ``layer_diff``'s keyword form (``layer_diff(pair, prompts, out, n_boot=200)``) builds
one too. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from alignloc.analyses.verdict import VerdictConfig


@dataclass(frozen=True)
class LayerDiffConfig:
    """How layer-diff measures a pair (see ``alignloc.experiments.layerdiff.layer_diff`` for each field).

    ``n_boot``: bootstrap resamples over prompts for every interval; ``seed``: bootstrap, folds, control
    tasks and the causal tests; ``probes``: per-layer linear probes; ``batch_size``: prompts per forward
    pass; ``backend``: hf | bridge | nnsight; ``what_changed``: the activation-difference lens;
    ``one_at_a_time``: one model in memory at a time while collecting; ``causal``: the causal tests, with
    ``budget`` (quick | standard | thorough), graft ``windows`` and ``mask_steps`` (None: the budget's) and
    ``versus_control`` (None: for a twin control only); ``verdict``: the verdict's thresholds
    (``analyses.verdict.VerdictConfig``; None: its defaults).
    """

    n_boot: int = 1000
    seed: int = 0
    probes: bool = True
    batch_size: int = 16
    backend: str = "hf"
    what_changed: bool = True
    one_at_a_time: bool = False
    causal: bool = False
    budget: str = "standard"
    windows: tuple[int, ...] | list[int] | None = None  # kept as a tuple
    mask_steps: int | None = None
    versus_control: bool | None = None
    verdict: VerdictConfig | None = None

    def __post_init__(self) -> None:
        if self.windows is not None:  # a list in, a tuple kept: the config cannot change under a run
            object.__setattr__(self, "windows", tuple(int(w) for w in self.windows))
        for name in ("n_boot", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"LayerDiffConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.mask_steps is not None and self.mask_steps < 0:
            raise ValueError(f"LayerDiffConfig.mask_steps must be >= 0 (0 skips the mask), got {self.mask_steps}")

    @classmethod
    def build(cls, config: LayerDiffConfig | None = None, **settings: Any) -> LayerDiffConfig:
        """``config`` (default: the defaults) with ``settings`` replacing its fields; a TypeError naming an
        unknown setting."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(settings) - set(names))
        if unknown:
            raise TypeError(f"layer_diff got unknown setting(s) {', '.join(unknown)}; LayerDiffConfig has "
                            f"{', '.join(names)} (and layer_diff itself control, store, overwrite, write, answers)")
        if config is not None and not isinstance(config, LayerDiffConfig):
            raise TypeError(f"config must be a LayerDiffConfig, got {type(config).__name__} (the verdict's "
                            "thresholds go in LayerDiffConfig(verdict=VerdictConfig(...)))")
        return dataclasses.replace(config or cls(), **settings)

    def replace(self, **changes: Any) -> LayerDiffConfig:
        """A copy with ``changes``."""
        return LayerDiffConfig.build(self, **changes)
