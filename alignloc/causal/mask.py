"""A learned mask over the tuned-minus-base delta, per layer or per module (after ILA, Shi et al. 2025).

The masked model is ``base + sum_u g_u * delta_u`` over units ``u`` (a decoder block, or its
``attn`` / ``mlp`` / ``norm`` parameters, plus ``embed`` and ``head`` = final norm + unembedding
outside the blocks), with gates ``g = sigmoid(theta)`` in [0, 1]. The gates are fitted so that the
masked model matches the *tuned* model's next-token distributions at the target positions of
behavior prompts (KL(tuned || masked), in units of the full base-to-tuned KL) under an L1
penalty ``sparsity * mean(g)``; optionally ``knowledge_weight`` times KL(base || masked) on
knowledge prompts keeps their predictions at the base's. A unit survives only where dropping it
would cost more than about ``sparsity / n_units`` of the gap, so the gates rank the layers by how
much of the behavior their delta carries, whatever their weight norms.

Two estimators:

- ``reinforce`` (default): ``g`` is the probability of keeping a unit's delta; each step samples
  ``samples`` binary masks, so the model is always the base with some units' deltas grafted whole
  (never a fraction of a delta), and the gradient is the score-function estimate. Its baseline
  is a linear model of the loss in the mask bits, fitted (ridge) on earlier steps' samples: each
  unit's gradient then sees the loss minus what the *other* units explain, which removes most
  of the variance a few large units would add (leave-one-out mean until enough samples exist).
  Forward passes only. Robust to deltas that are not linear paths in function (e.g. a
  reparametrized block: half of ``q*c, k/c`` is not a neutral change);
- ``relaxed``: continuous gates and backpropagation through the model (ILA's form); cheaper per
  step in samples, but it reads the model at fractional deltas.

Cost: ``steps * samples`` forward passes (``reinforce``) or ``steps`` forward + backward passes
(``relaxed``) of one model over ``batch_size`` prompts, plus one no-grad forward per prompt batch
of the reference model and one of the base, and ``2 k`` forward passes for the rounded top-k recovery
check. A sampled mask leaves the base's blocks below its lowest grafted unit untouched, so its
forward resumes the base's recorded run there (``causal.resumed``; ``resume=False`` for full
forwards): as the gates of layers that carry nothing fall, the samples compute fewer blocks
(``passes_["blocks_computed"]``: the mean share of blocks computed per sampled forward). A mask
drawn again on the same batch takes the loss it had (``passes_["reused_samples"]``; the rest,
``distinct_samples``, ran): as the gates settle near 0 or 1, most draws repeat. A unit whose delta is
zero (the layers a LoRA left alone; ``moved_units_`` lists the others) changes nothing when grafted, so
its bit is computed as off: the same loss, a forward that resumes at the first unit that moved, and more
draws that repeat. Memory:
the two models only (``reinforce`` swaps the sampled units' weights in place; ``relaxed`` builds
``base + g * delta`` per forward, one transient parameter set).

    mask = DeltaMask(steps=100).fit(pair, behavior_prompts, bos=True)
    mask.gates_, mask.ranking_, mask.recovery(pair, metric)
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch
from jaxtyping import Float

from alignloc.analyses.outputs import chunk_rows
from alignloc.analyses.weights import module_of
from alignloc.causal.graft import graft_effect, swapped
from alignloc.causal.metrics import scored_batch, scored_logits
from alignloc.causal.mixed import first_changed, mixed_logits
from alignloc.causal.resumed import ResumedScorer
from alignloc.models.families import get_module
from alignloc.models.pair import ModelPair
from alignloc.progress import iterate
from alignloc.prompts import Prompt

GRANULARITIES = ("layer", "module")
ESTIMATORS = ("reinforce", "relaxed")
log = logging.getLogger(__name__)
OUTSIDE = {"embed": "embed", "final_norm": "head", "unembed": "head", "other": "head"}


def unit_of(name: str, family, granularity: str) -> str:
    """The gate unit of a parameter: ``L3`` / ``L3.mlp`` for blocks, ``embed`` or ``head`` outside."""
    layer, module = module_of(name, family)
    if layer < 0:
        return OUTSIDE[module]
    return f"L{layer}" if granularity == "layer" else f"L{layer}.{module}"


def unit_layer(unit: str) -> int:
    """The block of a unit name (-1 for ``embed`` / ``head``)."""
    return int(unit[1:].split(".")[0]) if unit.startswith("L") else -1


def _target_positions(batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column indices, into ``scored_logits`` of a batch, of every target-predicting position."""
    rows, cols = [], []
    for r, t in enumerate(batch.tgt):
        for j in range(max(len(t), 1)):
            rows.append(r)
            cols.append(j)
    return torch.tensor(rows), torch.tensor(cols)


def _reference(ref_logp: Float[torch.Tensor, "k d_vocab"]) -> dict[str, torch.Tensor]:
    """What ``_kl`` needs of the reference distributions: ``p`` [k, d_vocab], ``sum p log p`` and ``sum p`` per row [k]
    (1 up to float32 rounding, which over a 262k vocabulary is worth 1e-5 of a KL)."""
    p = ref_logp.exp()
    return {"p": p, "plogp": (p * ref_logp).sum(-1), "psum": p.sum(-1)}


def _kl(ref: dict[str, torch.Tensor], logits: Float[torch.Tensor, "b n d_vocab"], rows: torch.Tensor,
        cols: torch.Tensor) -> torch.Tensor:
    """Mean KL(ref || softmax(logits[rows, cols])) over the rows: ``sum p log p - p . x + logsumexp(x) sum p`` per row,
    gathered and reduced a few rows at a time (``outputs.chunk_rows``: no fresh tens-of-MiB temporary per sample with
    a large vocabulary, and no log-softmax of the rows)."""
    step = chunk_rows(logits.shape[-1])
    parts = []
    for s in range(0, len(rows), step):
        x = logits[rows[s : s + step], cols[s : s + step]].float()  # [step, d_vocab]
        parts.append(ref["plogp"][s : s + step] - torch.linalg.vecdot(ref["p"][s : s + step], x)
                     + torch.logsumexp(x, -1) * ref["psum"][s : s + step])
    return torch.cat(parts).mean()


def _residuals(losses: Float[torch.Tensor, " k"], z: Float[torch.Tensor, "k unit"], seen_z: list[torch.Tensor],
               seen_loss: list[torch.Tensor], window: int = 256, ridge: float = 1e-3) -> Float[torch.Tensor, "k unit"]:
    """Per sample and unit: the loss minus a baseline that must not depend on that unit's own bit.

    With enough earlier samples, the baseline is ``c + sum_{v != u} w_v z_v`` from a ridge fit of
    the loss on the mask bits over the last ``window`` samples (earlier samples only, so the
    estimate stays unbiased); before that, the mean of the other samples of this step.
    """
    k, n = z.shape
    past_z = torch.cat(seen_z)[-window:] if seen_z else z[:0]
    if len(past_z) < 2 * (n + 1):
        loo = (losses.sum() - losses) / max(k - 1, 1)
        return (losses - loo)[:, None].expand(k, n)
    past_l = torch.cat(seen_loss)[-window:]
    x = torch.cat([torch.ones(len(past_z), 1), past_z], 1)  # [m, 1 + unit]
    coef = torch.linalg.solve(x.T @ x + ridge * torch.eye(n + 1), x.T @ past_l)  # [1 + unit]
    c, w = coef[0], coef[1:]
    pred = c + z @ w  # [k]
    return (losses - pred)[:, None] + w[None, :] * z  # add back each unit's own term


@dataclass
class DeltaMask:
    """Gates over the delta of a pair, fitted by gradient descent (scikit-learn style: ``fit`` -> self)."""

    granularity: str = "layer"
    estimator: str = "reinforce"
    sparsity: float = 0.5
    steps: int = 100
    samples: int = 4  # binary masks per step (reinforce)
    lr: float = 0.1
    init: float | None = None  # initial gate logit; default 0 (reinforce: p = 0.5) or 3 (relaxed: g = 0.95)
    knowledge_weight: float = 0.0
    batch_size: int = 16
    seed: int = 0
    resume: bool = True  # reinforce: each sample's forward starts at its lowest grafted block (same numbers)
    stack: bool = True  # reinforce, per layer: a step's distinct samples share one forward (``causal.mixed``)
    reuse: bool = True  # reinforce: a mask drawn again on the same batch takes its earlier loss (same numbers)
    moved_only: bool = True  # reinforce: a bit on a unit whose delta is zero is computed as off (same numbers)
    history_: list[float] = field(default_factory=list, repr=False)

    def _batches(self, pair: ModelPair, prompts: list[Prompt], bos: bool, ref: str,
                 scorer: ResumedScorer | None = None) -> list[dict]:
        """Teacher-forced batches with the reference model's log-probs at the scored positions (``scorer``: the
        base's recorded runs of the same batches, from which a sampled mask's forward resumes)."""
        out = []
        for i, s in enumerate(range(0, len(prompts), self.batch_size)):
            b = scored_batch(pair.tokenizer, prompts[s : s + self.batch_size], bos, pair.base.max_len)
            rows, cols = _target_positions(b)
            with torch.no_grad():
                logits = scored_logits(pair.side(ref), b, grouped=True)  # [b, k, d_vocab]
            out.append({"batch": b, "rows": rows, "cols": cols, "ref": _reference(torch.log_softmax(logits[rows, cols].float(), -1)),
                        "resume": (scorer, i) if scorer is not None else None})
        return out

    def fit(self, pair: ModelPair, prompts: list[Prompt], bos: bool = True,
            knowledge: list[Prompt] | None = None) -> DeltaMask:
        """Fit the gates on ``prompts`` (with targets); ``knowledge`` prompts feed the optional base term."""
        from torch.func import functional_call

        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {self.granularity!r}")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
        chosen = [p for p in prompts if p.target]
        if not chosen:
            raise ValueError("the delta mask needs prompts with a 'target'")
        fam, model = pair.base.family, pair.base.model
        base_p = {n: p.detach() for n, p in model.named_parameters()}
        tuned_p = {n: p.detach() for n, p in pair.tuned.model.named_parameters()}
        units = sorted({unit_of(n, fam, self.granularity) for n in base_p}, key=lambda u: (unit_layer(u) < 0, u))
        index = {n: units.index(unit_of(n, fam, self.granularity)) for n in base_p}
        # a unit whose delta is zero (a LoRA's untouched layers, an embedding no training moved) changes nothing when
        # grafted: a sample is computed as if its bit were off (the same model, so the same loss), which lets the
        # forward resume at the first unit that moved and a draw differing only there reuse an earlier loss
        moved = torch.ones(len(units))  # [unit]: 1 where the delta is not zero
        if self.moved_only:
            moved.zero_()
            for n, p in base_p.items():
                if moved[index[n]] == 0 and not torch.equal(p, tuned_p[n].to(p.device)):
                    moved[index[n]] = 1.0
        relaxed = self.estimator == "relaxed"
        # a sampled mask leaves the base's blocks below its lowest grafted unit as they are: its forward
        # resumes the base's recorded run there (causal.resumed), the same numbers for fewer blocks
        scorer = None if relaxed or not self.resume else ResumedScorer(pair.base, chosen, bos, self.batch_size)
        behavior = self._batches(pair, chosen, bos, "tuned", scorer)
        know = self._batches(pair, [p for p in knowledge or [] if p.target], bos, "base") if self.knowledge_weight else []
        n_layers = pair.n_layers
        computed: list[float] = []  # per sampled forward: the share of blocks it computed

        def start_of(g: torch.Tensor) -> int:
            """The first block a binary mask ``g`` changes (the last block if it grafts none: a cheap no-op resume)."""
            on = [unit_layer(u) for u, gu in zip(units, g, strict=True) if gu > 0.5 and u != "head"]
            return 0 if "embed" in [u for u, gu in zip(units, g, strict=True) if gu > 0.5] else min(on, default=n_layers - 1)

        def masked_logits(g: torch.Tensor, b: dict) -> torch.Tensor:
            if relaxed:  # base + g * delta, built per forward (no stored copy of the delta)
                params = {n: p + g[index[n]].to(p.device) * (tuned_p[n].to(p.device) - p) for n, p in base_p.items()}
                logits = scored_logits(pair.base, b["batch"],
                                       forward=lambda **kw: functional_call(model, params, args=(), kwargs=kw), grouped=True)
            else:  # a binary mask: the chosen units' tuned weights swapped into the base in place
                start = start_of(g) if b["resume"] is not None else 0
                with swapped(pair.base, pair.tuned, [n for n in base_p if g[index[n]] > 0.5]):
                    logits = b["resume"][0].logits(b["resume"][1], start) if b["resume"] else scored_logits(pair.base, b["batch"], grouped=True)
                computed.append(1 - start / n_layers if b["resume"] is None or b["resume"][0].exact else 1.0)
            return logits  # [b, k, d_vocab]

        with torch.no_grad():  # the full gap in KL units: base (all gates 0) against the tuned model
            zero = torch.zeros(len(units))
            scale = float(sum(_kl(b["ref"], masked_logits(zero, b), b["rows"], b["cols"]) for b in behavior) / len(behavior))
        scale = max(scale, 1e-6)
        gen = torch.Generator().manual_seed(self.seed)
        init = (3.0 if relaxed else 0.0) if self.init is None else self.init
        theta = torch.full((len(units),), float(init), requires_grad=True)
        opt = torch.optim.Adam([theta], lr=self.lr)
        self.history_ = []
        was_training = model.training
        model.eval()

        def objective(g: torch.Tensor, step: int, b: dict) -> torch.Tensor:
            out = _kl(b["ref"], masked_logits(g, b), b["rows"], b["cols"]) / scale
            if know:
                k = know[step % len(know)]
                out = out + self.knowledge_weight * _kl(k["ref"], masked_logits(g, k), k["rows"], k["cols"]) / scale
            return out

        # stacking: the units of each block, of the final norm and of the unembedding (the embedding's when tied)
        names = {id(p): n for n, p in model.named_parameters()}
        col = {u: i for i, u in enumerate(units)}
        block_cols = [col.get(f"L{layer}", -1) for layer in range(n_layers)]
        unembed_unit = unit_of(names[id(get_module(model, fam.unembed).weight)], fam, self.granularity)
        can_stack = (self.stack and not relaxed and scorer is not None and scorer.exact
                     and self.granularity == "layer" and -1 not in block_cols)
        checked = [False]
        counts = {"distinct": 0, "reused": 0, "stacked_forwards": 0, "steps_run": 0, "stack_fallback": False}

        def stacked(zs: torch.Tensor, step: int, b: dict) -> torch.Tensor:
            """``objective`` of masks ``zs [s, unit]`` (none grafting the embedding) in one mixed forward."""
            on = zs > 0.5
            blocks = on[:, block_cols]
            head = on[:, col["head"]] if "head" in col else torch.zeros(len(zs), dtype=torch.bool)
            sc, part = b["resume"]
            logits = mixed_logits(model, pair.tuned.model, fam, sc.prefixes[part], b["batch"].ids, b["batch"].index,
                                  blocks, head, on[:, col[unembed_unit]])  # [s, b, k, d_vocab]
            computed.extend((1 - first_changed(blocks).float() / n_layers).tolist())
            out = torch.stack([_kl(b["ref"], lg, b["rows"], b["cols"]) / scale for lg in logits])
            if know:
                k = know[step % len(know)]
                out = out + torch.stack([self.knowledge_weight * _kl(k["ref"], masked_logits(g, k), k["rows"], k["cols"]) / scale
                                         for g in zs])
            return out

        memo: dict[tuple, float] = {}  # (batch, knowledge batch, mask bits) -> loss: a mask drawn again is not rerun

        def sample_losses(z: torch.Tensor, step: int, b: dict, batch: int) -> torch.Tensor:
            """``objective`` of each sampled mask ``z [sample, unit]``: each distinct mask once, its bits on units that
            did not move read as off (a mask already scored on this batch in an earlier step takes that loss); those
            that leave the embedding as it is stacked into one forward where the pair allows (checked once against
            one forward per mask), the others one forward each."""
            nonlocal can_stack
            uniq, inverse = torch.unique(z * moved, dim=0, return_inverse=True)  # the masks as computed
            keys = [(batch, step % len(know) if know else -1, u.bool().numpy().tobytes()) for u in uniq]
            vals = torch.tensor([memo.get(k, math.nan) for k in keys])
            todo = [j for j in range(len(uniq)) if not self.reuse or keys[j] not in memo]
            counts["distinct"] += len(todo)
            counts["reused"] += len(uniq) - len(todo)
            counts["steps_run"] += bool(todo)
            together = [j for j in todo if can_stack and not ("embed" in col and uniq[j, col["embed"]] > 0.5)]
            for j in todo:
                if j not in together:
                    vals[j] = objective(uniq[j], step, b)
            if together:
                vals[together] = stacked(uniq[together], step, b)
                counts["stacked_forwards"] += 1
                if not checked[0]:  # the first stacked step is also run one mask at a time
                    checked[0] = True
                    seen = len(computed)
                    alone = torch.stack([objective(uniq[j], step, b) for j in together])
                    del computed[seen:]  # the check's forwards are not the fit's: blocks_computed counts each sample once
                    if not torch.allclose(alone, vals[together], rtol=1e-4, atol=1e-5):
                        log.warning("delta mask: stacked samples differ from one forward each (largest difference "
                                    "%.1e); one forward per sample", float((alone - vals[together]).abs().max()))
                        can_stack, counts["stack_fallback"] = False, True
                        vals[together] = alone
            memo.update({keys[j]: float(vals[j]) for j in todo})
            return vals[inverse]

        seen_z: list[torch.Tensor] = []
        seen_loss: list[torch.Tensor] = []
        for step in iterate(range(self.steps), "delta mask", unit="step"):
            batch = int(torch.randint(len(behavior), (1,), generator=gen))
            b = behavior[batch]
            opt.zero_grad()
            if relaxed:
                with torch.enable_grad():
                    g = torch.sigmoid(theta)
                    loss = objective(g, step, b) + self.sparsity * g.mean()
                    loss.backward()
                self.history_.append(float(loss.detach()))
            else:  # score-function gradient over binary masks
                p = torch.sigmoid(theta.detach())
                z = (torch.rand(self.samples, len(units), generator=gen) < p).float()  # [sample, unit]
                with torch.no_grad():
                    losses = sample_losses(z, step, b, batch)  # [sample]
                resid = _residuals(losses, z, seen_z, seen_loss)  # [sample, unit]
                grad = (resid * (z - p)).mean(0)  # d E[loss] / d theta
                theta.grad = grad + self.sparsity * p * (1 - p) / len(units)
                seen_z.append(z)
                seen_loss.append(losses)
                self.history_.append(float(losses.mean() + self.sparsity * p.mean()))
            opt.step()
        model.train(was_training)
        self.units_ = units
        self.gates_ = torch.sigmoid(theta.detach())
        self.kl_scale_ = scale
        per_step = 1 + bool(know)
        self.moved_units_ = [u for u, m in zip(units, moved, strict=True) if m]
        self.passes_ = {"forward_backward": 0 if not relaxed else self.steps * per_step,
                        "forward": len(behavior) * 2 + len(know) + (0 if relaxed else self.steps * self.samples * per_step),
                        "blocks_computed": round(sum(computed) / len(computed), 4) if computed else 1.0,
                        "distinct_samples": counts["distinct"], "reused_samples": counts["reused"],
                        "steps_run": counts["steps_run"], "stacked_forwards": counts["stacked_forwards"],
                        "stack_fallback": counts["stack_fallback"]}
        n = pair.n_layers
        self.layer_gates_ = [max((float(g) for u, g in zip(units, self.gates_, strict=True) if unit_layer(u) == layer),
                                 default=0.0) for layer in range(n)]
        self.ranking_ = sorted(range(n), key=lambda i: (-self.layer_gates_[i], i))
        self.selected_ = [i for i in range(n) if self.layer_gates_[i] >= 0.5]
        return self

    def recovery(self, pair: ModelPair, metric, max_k: int | None = None) -> dict:
        """Graft the top-k layers by gate (gates rounded to 1, the rest to 0) for k = 1..max_k, and the
        rounded selection (gates >= 0.5): sufficiency and necessity on ``metric``."""
        max_k = min(pair.n_layers, max_k or pair.n_layers)
        m_base, m_tuned = metric(pair.base), metric(pair.tuned)
        top = []
        for k in range(1, max_k + 1):
            s, n = graft_effect(pair, metric, sorted(self.ranking_[:k]), m_base, m_tuned)
            top.append({"k": k, "layers": sorted(self.ranking_[:k]), "sufficiency": s, "necessity": n})
        sel = graft_effect(pair, metric, self.selected_, m_base, m_tuned) if self.selected_ else (0.0, 0.0)
        return {"gap": m_tuned - m_base, "top_k": top,
                "selected": {"layers": self.selected_, "sufficiency": sel[0], "necessity": sel[1]}}

    def to_json(self) -> dict:
        """The fitted gates and settings, JSON-ready."""
        return {"granularity": self.granularity, "estimator": self.estimator, "sparsity": self.sparsity,
                "steps": self.steps, "samples": self.samples, "lr": self.lr,
                "knowledge_weight": self.knowledge_weight, "units": self.units_, "moved_units": self.moved_units_,
                "gates": [round(float(g), 6) for g in self.gates_], "layer_gates": self.layer_gates_,
                "ranking": self.ranking_, "selected": self.selected_, "kl_scale": self.kl_scale_,
                "final_loss": self.history_[-1] if self.history_ else math.nan, "passes": self.passes_}
