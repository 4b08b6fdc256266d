"""Linear probes on synthetic activations with a known signal planted in chosen layers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from beartype import beartype
from jaxtyping import TypeCheckError, jaxtyped
from threadpoolctl import threadpool_limits

from alignloc.analyses.probes import (
    control_labels,
    cv_folds,
    encode_labels,
    probe_report,
    probe_sklearn,
    probe_torch,
)

N, D, K = 300, 32, 4


@pytest.fixture(autouse=True)
def _one_thread():
    """These fits are tiny: thread hand-offs cost more than they save (10-100x on a shared
    2-core box), for scikit-learn's BLAS and torch alike. Scoped to each test."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(n)


def make_acts(
    strengths: list[float], n: int = N, d: int = D, k: int = K, seed: int = 0, shared: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """``acts [layer, n, d]``, ``y [n]``: noise (plus, with ``shared``, a rank-8 component common
    to all features, as in residual streams) and ``strength * class mean`` per layer, then an
    offset and per-feature scales spanning 3 orders of magnitude (so standardisation matters)."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % k)
    acts = rng.standard_normal((len(strengths), n, d))
    acts += shared * rng.standard_normal((len(strengths), n, 8)) @ rng.standard_normal((8, d))
    for layer, s in enumerate(strengths):
        acts[layer] += s * rng.standard_normal((k, d))[y]
    scale = 10 ** rng.uniform(-1.5, 1.5, size=(len(strengths), 1, d))
    return acts * scale + rng.normal(0, 50, size=(len(strengths), 1, d)), y


def test_encode_labels():
    codes, names = encode_labels(["paris", "rome", "paris", "oslo"])
    assert names == ["oslo", "paris", "rome"]
    assert codes.tolist() == [1, 2, 1, 0] and codes.dtype == np.int64


def test_signal_layers_separable_noise_layers_at_chance():
    acts, y = make_acts([0.0, 0.0, 3.0, 3.0])
    for probe in (probe_torch, probe_sklearn):
        acc = probe(acts, y, cv_folds(y))
        assert acc.shape == (4,)
        assert acc[0] < 0.36 and acc[1] < 0.36, (probe.__name__, acc)  # chance is 0.25
        assert acc[2] > 0.95 and acc[3] > 0.95, (probe.__name__, acc)


@pytest.mark.parametrize(
    ("k", "C", "strengths", "shared"),
    [
        (4, 1.0, [0.0, 0.25, 0.35, 0.5], 0.0),
        (2, 0.05, [0.0, 0.15, 0.2, 0.3], 0.0),
        (6, 1.0, [0.0, 0.3, 0.4, 0.6], 2.0),
    ],
    ids=["multinomial", "binary-strong-l2", "correlated-features"],
)
def test_torch_matches_sklearn_on_hard_data(k, C, strengths, shared):
    acts, y = make_acts(strengths, k=k, seed=1, shared=shared)
    folds = cv_folds(y)
    ref = probe_sklearn(acts, y, folds, C=C)
    # Not trivially separable: the comparison is about which borderline prompts flip.
    assert ((ref > 1 / k + 0.15) & (ref < 0.9)).sum() >= 2, ref
    for dtype in (torch.float32, torch.float64):
        for precondition in (True, False):
            got = probe_torch(
                torch.as_tensor(acts), y, folds, C=C, dtype=dtype, precondition=precondition
            )
            assert np.abs(got - ref).max() <= 0.01, (dtype, precondition, got, ref)


def test_transfer_drops_where_the_tuned_model_rotated_the_signal():
    base, y = make_acts([0.0, 3.0, 3.0, 3.0], seed=2)
    tuned = base.copy()
    q, _ = np.linalg.qr(np.random.default_rng(3).standard_normal((D, D)))
    tuned[2] = base[2] @ q  # same information, written in other directions
    rep = probe_report(base, tuned, y, n_folds=5, seed=0)
    assert rep["base"][2] > 0.95 and rep["tuned"][2] > 0.95  # readable within each model
    assert rep["transfer"][2] < 0.5  # but the base probe no longer reads it
    assert rep["transfer"][1] > 0.95 and rep["transfer"][3] > 0.95  # untouched layers transfer
    assert rep["transfer"][0] < 0.36


def test_control_task_separates_memorisation_from_signal():
    # 60 entities x 5 prompts; the label is a property of the entity.
    rng = np.random.default_rng(4)
    ent = np.repeat(np.arange(60), 5)
    y_ent = rng.permutation(np.arange(60) % K)
    y, groups = y_ent[ent], [f"e{i}" for i in ent]
    ent_vec, cls_vec = rng.standard_normal((60, D)), rng.standard_normal((K, D))
    noise = rng.standard_normal((3, len(y), D))
    acts = np.stack(
        [
            noise[0],  # layer 0: nothing
            3 * ent_vec[ent] + 0.5 * noise[1],  # layer 1: entity identity only (memorisable)
            3 * cls_vec[y] + 0.5 * ent_vec[ent] + noise[2],  # layer 2: the property itself
        ]
    )
    rep = probe_report(acts, acts, y, groups=groups, seed=0)
    sel, ctl, acc = rep["selectivity_base"], rep["control_base"], rep["base"]
    assert ctl[1] > 0.6  # per-entity random labels can be memorised at layer 1 ...
    assert sel[1] < 0.2  # ... so high accuracy there is not evidence of the property
    assert sel[2] > 0.5 and ctl[2] < acc[2] - 0.5  # layer 2 encodes the property
    assert abs(sel[0]) < 0.15 and acc[0] < 0.4
    assert rep["selectivity_tuned"] == sel


def test_control_labels():
    y = np.array([0, 0, 1, 1, 2, 2, 2, 2])
    perm = control_labels(y, seed=0)
    assert sorted(perm.tolist()) == sorted(y.tolist()) and not np.array_equal(perm, y)
    groups = ["a", "a", "b", "b", "c", "c", "d", "d"]
    ctl = control_labels(y, groups, seed=1)
    assert all(ctl[i] == ctl[i + 1] for i in range(0, 8, 2))  # one label per group
    assert set(ctl.tolist()) <= {0, 1, 2}
    assert np.array_equal(ctl, control_labels(y, groups, seed=1))
    draws = np.stack([control_labels(y, groups, seed=s) for s in range(200)])
    assert 0.4 < (draws == 2).mean() < 0.6  # drawn from the label distribution (P=0.5)
    with pytest.raises(ValueError, match="groups"):
        control_labels(y, groups[:-1])


def test_cv_folds_rare_and_single_classes():
    y = np.array([0] * 100 + [1] * 100 + [2] * 3)
    folds = cv_folds(y, n_folds=5, seed=0)
    assert len(folds) == 3  # the rare class caps the number of folds
    tests = np.concatenate([te for _, te in folds])
    assert sorted(tests.tolist()) == list(range(len(y)))  # a partition
    for tr, te in folds:
        assert not set(tr) & set(te) and (y[te] == 2).sum() == 1
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, cv_folds(y, 5, 0)))

    acts, _ = make_acts([0.0, 3.0], n=101, seed=5)
    y1 = np.array([0, 1] * 50 + [2])  # class 2 has one prompt: missing from one training fold
    folds1 = cv_folds(y1, n_folds=5)
    assert len(folds1) == 2
    got, ref = probe_torch(acts, y1, folds1), probe_sklearn(acts, y1, folds1)
    assert np.abs(got - ref).max() <= 0.01, (got, ref)

    with pytest.raises(ValueError, match="at least 2 classes"):
        cv_folds(np.zeros(10, dtype=int))


def test_identical_pair_is_null_repeatable_and_json_ready():
    acts, y = make_acts([0.0, 1.0], n=120, seed=6)
    rep = probe_report(acts, acts, y, n_folds=3)
    assert rep["transfer"] == rep["base"] == rep["tuned"]
    assert rep["control_base"] == rep["control_tuned"]
    assert rep == probe_report(acts, acts, y, n_folds=3)
    assert json.loads(json.dumps(rep)) == rep
    assert rep["n"] == 120 and rep["n_classes"] == K and rep["majority"] == 0.25
    assert set(rep) == {
        "n", "n_classes", "majority", "base", "tuned", "transfer",
        "control_base", "control_tuned", "selectivity_base", "selectivity_tuned",
    }  # fmt: skip
    with pytest.raises(ValueError, match="solver"):
        probe_report(acts, acts, y, solver="liblinear")


def test_shape_annotations_are_checked():
    acts, y = make_acts([0.0, 1.0], n=60, seed=7)
    checked = jaxtyped(typechecker=beartype)(probe_torch)
    assert checked(torch.as_tensor(acts), y, cv_folds(y, 3)).shape == (2,)
    with pytest.raises(TypeCheckError):
        checked(acts, y, cv_folds(y, 3), test_acts=acts[:1])
