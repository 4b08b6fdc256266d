"""Per-layer measurements of one pair, from its PairData: pure functions, JSON-ready output.

Every per-prompt mean carries a bootstrap interval over prompts (``{"mean", "lo", "hi"}`` lists,
one entry per layer). Residual-stream shift accumulates along depth, so each cumulative curve is
also given as per-layer *increments*: what layer ``l`` adds on top of layer ``l-1``.
"""

from __future__ import annotations

from collections import Counter

import torch

from alignloc.analyses.lens import agreement_with_output, first_agreeing_layer
from alignloc.analyses.shift import GRAM_MAX_N, cka_bootstrap, cosine_shift, linear_cka, relative_l2
from alignloc.analyses.stats import bootstrap_indices, mean_ci, stat_ci
from alignloc.layerdiff.collect import SITE_KINDS, PairData

KINDS = ("knowledge", "behavior", "context", "other")
MOVED_NATS = 2.0  # a target's probability changes by e^2 (7.4x) or more


def kind_index(data: PairData) -> dict[str, torch.Tensor]:
    """Prompt indices per prompt kind (``all`` included), only kinds that occur."""
    out = {"all": torch.arange(len(data.prompts))}
    for k in KINDS:
        idx = torch.tensor([i for i, p in enumerate(data.prompts) if (p.kind or "other") == k], dtype=torch.long)
        if len(idx):
            out[k] = idx
    return out


def per_prompt_increments(x: torch.Tensor, start: torch.Tensor | None = None) -> torch.Tensor:
    """``[layer, n]`` cumulative values -> per-layer increments (layer 0 minus ``start [n]``, default 0)."""
    return torch.diff(x, dim=0, prepend=torch.zeros_like(x[:1]) if start is None else start[None])


def shift_measures(data: PairData, n_boot: int, seed: int) -> dict:
    """1-cos, relative L2 (and its increments) of the residual stream, relative L2 of each block's
    attention and MLP writes, and linear CKA, per layer."""
    rb, rt = data.acts["base"]["resid_post"], data.acts["tuned"]["resid_post"]  # [layer, n, d]
    rel = torch.stack([relative_l2(b, t) for b, t in zip(rb, rt, strict=True)])  # [layer, n]
    cos = torch.stack([cosine_shift(b, t) for b, t in zip(rb, rt, strict=True)])
    emb = relative_l2(data.acts["base"]["resid_pre"][0], data.acts["tuned"]["resid_pre"][0])  # [n]
    out = {
        "embedding_relative_l2": mean_ci(emb, n_boot, seed),
        "relative_l2": mean_ci(rel.T, n_boot, seed),
        "relative_l2_increment": mean_ci(per_prompt_increments(rel, emb).T, n_boot, seed),
        "one_minus_cos": mean_ci(cos.T, n_boot, seed),
    }
    for kind in SITE_KINDS[1:]:
        b, t = data.acts["base"][kind], data.acts["tuned"][kind]
        out[f"{kind}_relative_l2"] = mean_ci(torch.stack([relative_l2(x, y) for x, y in zip(b, t, strict=True)]).T, n_boot, seed)
    out["cka"] = cka_ci(rb, rt, n_boot, seed)
    return out


def cka_ci(rb: torch.Tensor, rt: torch.Tensor, n_boot: int, seed: int) -> dict[str, list[float]]:
    """Linear CKA per layer of ``[layer, n, d]`` residuals with a bootstrap interval over prompts: from
    the resamples' multiplicities on the Gram matrices (``cka_bootstrap``), or, for more prompts than
    ``GRAM_MAX_N``, on resampled rows in the feature form (at most 200 resamples: ``n d^2`` each)."""
    n = rb.shape[1]
    out: dict[str, list[float]] = {"mean": [], "lo": [], "hi": []}
    for b, t in zip(rb, rt, strict=True):
        if n <= GRAM_MAX_N:
            vals = cka_bootstrap(b, t, bootstrap_indices(n, n_boot, seed))
            c = {"mean": linear_cka(b, t), "lo": float(torch.quantile(vals, 0.025)), "hi": float(torch.quantile(vals, 0.975))}
        else:
            c = stat_ci(lambda i, b=b, t=t: linear_cka(b[i], t[i]), n, n_boot=min(n_boot, 200), seed=seed)
        for k in out:
            out[k].append(c[k])
    return out


def lens_measures(data: PairData, n_boot: int, seed: int) -> dict:
    """Lens KL(base||tuned) per layer (overall, increments, per kind), each lens's agreement with
    its own model's output, and the target token's lens log-prob per kind and side."""
    lens, groups = data.lens, kind_index(data)
    out = {
        "kl": mean_ci(lens["kl"].T, n_boot, seed),
        "kl_increment": mean_ci(per_prompt_increments(lens["kl"]).T, n_boot, seed),
        "kl_by_kind": {k: mean_ci(lens["kl"][:, idx].T, n_boot, seed) for k, idx in groups.items() if k != "all"},
        "agreement_with_output": {side: agreement_with_output(lens[f"top1_{side}"]).tolist() for side in ("base", "tuned")},
        "first_agreeing_layer_median": {
            side: float(first_agreeing_layer(lens[f"top1_{side}"]).float().median()) for side in ("base", "tuned")
        },
        "target_logprob": {},
    }
    for k, idx in groups.items():
        lb, lt = lens["target_lp_base"][:, idx], lens["target_lp_tuned"][:, idx]
        keep = ~torch.isnan(lb[0])
        if keep.sum() < 2:
            continue
        gap = (lt - lb)[:, keep]  # [layer, n_k]
        out["target_logprob"][k] = {
            "base": lb[:, keep].mean(1).tolist(),
            "tuned": lt[:, keep].mean(1).tolist(),
            "gap": mean_ci(gap.T, n_boot, seed),
            "gap_increment": mean_ci(per_prompt_increments(gap).T, n_boot, seed),
            # share of prompts whose target moves by more than MOVED_NATS at this layer: a few
            # edited facts stand out here while they vanish in the mean over all prompts
            "moved_rate": mean_ci((per_prompt_increments(gap).abs() > MOVED_NATS).float().T, n_boot, seed),
        }
    return out


def output_measures(data: PairData, n_boot: int, seed: int) -> dict:
    """Per prompt kind: the teacher-forced target log-prob of each model and its change, and top-1
    accuracy on the target's first token (the final layer of the lens is the model's output)."""
    out = {}
    for k, idx in kind_index(data).items():
        lb, lt = data.target_lp["base"][idx], data.target_lp["tuned"][idx]
        keep = ~torch.isnan(lb)
        if keep.sum() < 2:
            continue
        sel = idx[keep]
        tid_ok = {s: (data.lens[f"top1_{s}"][-1, sel] == data.lens["target_ids"][sel]).float() for s in ("base", "tuned")}
        out[k] = {
            "n": int(keep.sum()),
            "logprob_base": float(lb[keep].mean()),
            "logprob_tuned": float(lt[keep].mean()),
            "logprob_delta": mean_ci((lt - lb)[keep], n_boot, seed),
            "answer_tokens": float(data.answer_tokens[sel].mean()),  # the delta's per-answer factor
            "accuracy_base": float(tid_ok["base"].mean()),
            "accuracy_tuned": float(tid_ok["tuned"].mean()),
            "accuracy_delta": mean_ci(tid_ok["tuned"] - tid_ok["base"], n_boot, seed),
        }
    return out


def probe_measures(data: PairData, seed: int, n_folds: int = 5, min_per_class: int = 2) -> dict:
    """Per-layer linear probes on the last-token residual stream: knowledge labels on
    ``knowledge`` prompts, behavior labels on ``behavior`` prompts (the prompts' ``label``), each
    trained on base, on tuned, base->tuned transfer, and a control task (see analyses.probes)."""
    from alignloc.analyses.probes import encode_labels, probe_report

    out = {}
    for kind in ("knowledge", "behavior"):
        rows = [i for i, p in enumerate(data.prompts) if p.kind == kind and p.label is not None]
        counts = Counter(str(data.prompts[i].label) for i in rows)
        rows = [i for i in rows if counts[str(data.prompts[i].label)] >= min_per_class]
        if len({str(data.prompts[i].label) for i in rows}) < 2:
            continue
        idx = torch.tensor(rows)
        y, classes = encode_labels([str(data.prompts[i].label) for i in rows])
        groups = [str(data.prompts[i].meta.get("entity", data.prompts[i].id)) for i in rows]
        rep = probe_report(data.acts["base"]["resid_post"][:, idx], data.acts["tuned"]["resid_post"][:, idx], y,
                           groups=groups, n_folds=n_folds, seed=seed)
        out[kind] = rep | {"classes": classes[:50]}
    return out


def measure(data: PairData, n_boot: int = 1000, seed: int = 0, probes: bool = True) -> dict:
    """All per-layer measurements of one pair (JSON-ready)."""
    m = {
        "weights": data.weights,
        "shift": shift_measures(data, n_boot, seed),
        "lens": lens_measures(data, n_boot, seed),
        "outputs": output_measures(data, n_boot, seed),
    }
    if probes:
        m["probes"] = probe_measures(data, seed)
    return m
