"""Per-layer linear probes: where is a property linearly readable, in each model of a pair?

A probe is L2-regularised multinomial logistic regression on standardised residual-stream
activations, scored by stratified k-fold held-out accuracy. Three readings per layer:

- ``base`` / ``tuned``: within-model accuracy (train and test on the same model);
- ``transfer``: train on base, test on tuned (same prompts, same folds). A drop against
  ``tuned`` means post-training moved *where* the property is written, not whether it is;
- ``selectivity``: accuracy minus a control task's (Hewitt & Liang 2019), so a layer that merely
  has room to memorise arbitrary per-entity labels does not count as "knowing" the property.

``probe_sklearn`` is the reference (one scikit-learn fit per layer and fold); ``probe_torch``
solves every layer and fold at once as one batched problem with the same objective and must
agree with it to within 0.01 accuracy per layer (``benchmarks/probes.py`` times both).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from jaxtyping import Float, Int
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

Acts = Float[np.ndarray, "layer batch d_model"] | Float[torch.Tensor, "layer batch d_model"]
Labels = Int[np.ndarray, " batch"]
Folds = list[tuple[Int[np.ndarray, " _n_train"], Int[np.ndarray, " _n_test"]]]  # "_": sizes differ between folds


def encode_labels(labels: list[str]) -> tuple[Labels, list[str]]:
    """Integer codes ``[batch]`` and the sorted class names they index."""
    names, codes = np.unique(np.asarray(labels, dtype=str), return_inverse=True)
    return codes.astype(np.int64), [str(s) for s in names]


def cv_folds(y: Labels, n_folds: int = 5, seed: int = 0) -> Folds:
    """Stratified, shuffled ``(train_idx, test_idx)`` folds.

    Uses fewer folds (at least 2) when the rarest class has fewer than ``n_folds`` examples;
    a class with a single example is allowed (it is then missing from one training fold).
    """
    y = np.asarray(y)
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise ValueError(f"probing needs at least 2 classes, got {classes.tolist()}")
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}")
    if counts.max() < 2:
        raise ValueError("every class has one example: nothing to cross-validate; add prompts")
    k = max(2, min(n_folds, int(counts.min())))
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # "least populated class has only 1 member": allowed here
        warnings.simplefilter("ignore", UserWarning)
        return [(tr, te) for tr, te in skf.split(np.zeros(len(y)), y)]


def _numpy(acts: Acts) -> np.ndarray:
    if isinstance(acts, torch.Tensor):  # bf16 / f16 captures: widen, numpy has no bf16
        acts = acts.detach().cpu()
        return (acts if acts.dtype in (torch.float32, torch.float64) else acts.float()).numpy()
    return np.asarray(acts)


def _check(acts: Acts, y: Labels, test_acts: Acts | None) -> tuple[np.ndarray, np.ndarray]:
    a = _numpy(acts)
    t = a if test_acts is None else _numpy(test_acts)
    if a.ndim != 3 or a.shape[1] != len(y):
        raise ValueError(f"acts must be [layer, batch={len(y)}, d_model], got {a.shape}")
    if t.shape != a.shape:
        raise ValueError(f"test_acts {t.shape} must match acts {a.shape}: same prompts, layers")
    if y.min() < 0:
        raise ValueError("labels must be integer codes >= 0 (see encode_labels)")
    return a, t


def probe_sklearn(
    acts: Acts, y: Labels, folds: Folds, C: float = 1.0, test_acts: Acts | None = None
) -> Float[np.ndarray, " layer"]:
    """Mean held-out accuracy per layer, one scikit-learn ``LogisticRegression`` per layer and fold.

    The scaler and probe are fit on ``acts[:, train]``; the score is on ``test_acts[:, test]``
    (``acts`` when None): pass the tuned model's activations to get the transfer probe.
    """
    y = np.asarray(y)
    a, t = _check(acts, y, test_acts)
    acc = np.zeros((a.shape[0], len(folds)))  # [layer, fold]
    for layer in range(a.shape[0]):
        for f, (tr, te) in enumerate(folds):
            if len(np.unique(y[tr])) < 2:  # one class to learn: the probe predicts it
                acc[layer, f] = np.mean(y[te] == y[tr][0])
                continue
            scaler = StandardScaler().fit(a[layer, tr])
            clf = LogisticRegression(C=C, max_iter=1000).fit(scaler.transform(a[layer, tr]), y[tr])
            acc[layer, f] = clf.score(scaler.transform(t[layer, te]), y[te])
    return acc.mean(axis=1)


def _lbfgs(fg, x: torch.Tensor, max_iter: int, tol: float, history: int = 10, max_ls: int = 20):
    """Minimise ``L x F`` independent convex problems ``x [L, F, D]`` at once: L-BFGS with each
    problem's own history, Armijo backtracking step and stopping test (``stop <= tol``), as
    scipy runs them one by one. ``fg(x) -> (f [L, F], g [L, F, D], stop [L, F])``."""
    f, g, stop = fg(x)
    hist: list[tuple] = []  # (step s, gradient change y, 1 / s.y or 0 if it did not move)
    gamma = 1 / g.norm(dim=-1).clamp_min(1)  # [L, F] initial inverse-Hessian scale
    stuck = torch.zeros_like(stop, dtype=torch.bool)
    for _ in range(max_iter):
        active = (stop > tol) & ~stuck  # [L, F]
        if not active.any():
            break
        q, alphas = g.clone(), []
        for s, yv, rho in reversed(hist):  # two-loop recursion: r = H^-1 g
            alphas.append(rho * (s * q).sum(-1))
            q -= alphas[-1][..., None] * yv
        r = gamma[..., None] * q
        for (s, yv, rho), a in zip(hist, reversed(alphas)):
            r += s * (a - rho * (yv * r).sum(-1))[..., None]
        d = torch.where(active[..., None], -r, 0)  # [L, F, D] descent directions
        uphill = active & ((g * d).sum(-1) >= 0)  # lost curvature information: restart from -g
        if uphill.any():
            d = torch.where(uphill[..., None], -g / g.norm(dim=-1, keepdim=True), d)
        gd = (g * d).sum(-1)
        t, todo = torch.ones_like(gd), active.clone()
        x_new, f_new, g_new, stop_new = x, f, g, stop
        for _ in range(max_ls):
            ft, gt, st = fg(x + t[..., None] * d)
            # Armijo, or where f's rounding noise hides the decrease, Hager & Zhang's
            # approximate Armijo condition on the slope: phi'(t) <= (2 * 1e-4 - 1) phi'(0).
            near = ft <= f + 8 * torch.finfo(x.dtype).eps * f.abs()
            ok = todo & ((ft <= f + 1e-4 * t * gd) | (near & ((gt * d).sum(-1) <= -0.9998 * gd)))
            x_new = torch.where(ok[..., None], x + t[..., None] * d, x_new)
            f_new, stop_new = torch.where(ok, ft, f_new), torch.where(ok, st, stop_new)
            g_new = torch.where(ok[..., None], gt, g_new)
            todo &= ~ok
            if not todo.any():
                break
            t = torch.where(todo, t / 2, t)
        stuck |= todo  # no acceptable step at working precision: stop there
        s, yv = x_new - x, g_new - g
        sy, yy = (s * yv).sum(-1), (yv * yv).sum(-1)
        moved = sy > 1e-12
        gamma = torch.where(moved, sy / yy.clamp_min(1e-30), gamma)
        hist = [*hist, (s, yv, torch.where(moved, 1 / sy.clamp_min(1e-12), 0))][-history:]
        x, f, g, stop = x_new, f_new, g_new, stop_new
    return x


def _preconditioner(
    x: torch.Tensor, train: torch.Tensor, mu: torch.Tensor, sd: torch.Tensor, curv: torch.Tensor,
    lam: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    """Cholesky factors ``L [layer, fold, d_model, d_model]`` of each problem's Hessian at
    ``W = 0``: standardised training covariance times the softmax curvature ``curv [fold]``, plus
    the L2 term. With ``W = L^-T U``, L-BFGS sees an identity Hessian at the start. A failed
    factorisation gets the identity."""
    n_tr, d = train.sum(1).to(x.dtype), x.shape[-1]
    gram = x.mT @ x  # [layer, d_model, d_model]
    h0 = gram[:, None].repeat(1, train.shape[0], 1, 1)  # [layer, fold, d_model, d_model]
    for f in range(train.shape[0]):
        rest = x[:, ~train[f]]  # rows outside the training fold
        h0[:, f].baddbmm_(rest.mT, rest, alpha=-1).div_(n_tr[f])
        h0[:, f].sub_(mu[:, f, :, None] * mu[:, f, None, :])
        h0[:, f].mul_(curv[f] / (sd[:, f, :, None] * sd[:, f, None, :]))
    h0.diagonal(dim1=-2, dim2=-1).add_((2 * lam)[:, None])
    chol, info = torch.linalg.cholesky_ex(h0)
    if (info != 0).any():
        chol[info != 0] = torch.eye(d, dtype=x.dtype, device=x.device)
    return chol


def probe_torch(
    acts: Acts,
    y: Labels,
    folds: Folds,
    C: float = 1.0,
    test_acts: Acts | None = None,
    max_iter: int = 1000,
    tol: float = 1e-4,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    precondition: bool | None = None,
) -> Float[np.ndarray, " layer"]:
    """``probe_sklearn``'s estimate, with every (layer, fold) problem solved in one batched L-BFGS.

    Each problem minimises scikit-learn's objective divided by its training size,
    ``mean CE + ||W||^2 / (2 C n_train)`` with the intercept unpenalised, and stops at the same
    gradient tolerance. As in scikit-learn, a fold whose training set holds two classes is a
    binary logistic regression (one weight vector), and classes absent from a training fold are
    never predicted. Standardisation is folded into the weights: no per-fold copy of the data.
    ``precondition`` (default: when ``d_model <= n_train`` and the ``[layer, fold, d_model,
    d_model]`` factors fit in 1 GB) solves for ``W = L^-T U`` (see ``_preconditioner``) instead
    of ``W``: the same minimiser in several times fewer steps.
    """
    y = np.asarray(y)
    a, t = _check(acts, y, test_acts)
    n_layers, n, d = a.shape
    k, n_f = int(y.max()) + 1, len(folds)
    # A global affine rescaling, undone exactly by the per-fold scalers below (so no test-fold
    # information enters): it keeps the folded-in standardisation well conditioned in float32.
    x = torch.as_tensor(a, device=device)  # [layer, batch, d_model]
    scale, shift = torch.std_mean(x, 1, keepdim=True)
    scale = scale.clamp_min(1e-12)
    x = ((x - shift) / scale).to(dtype)
    yt = torch.as_tensor(y, device=device)
    train = torch.zeros(n_f, n, dtype=torch.bool, device=device)  # [fold, batch]
    for f, (tr, _) in enumerate(folds):
        train[f, torch.as_tensor(tr, device=device)] = True
    n_tr = train.sum(1).to(dtype)  # [fold]

    # Per-fold scaler stats; a (near-)constant feature gets scale 1, as in StandardScaler.
    m = train.to(dtype)
    mu = torch.einsum("fn,lnd->lfd", m, x) / n_tr[:, None]  # [layer, fold, d_model]
    var = torch.einsum("fn,lnd->lfd", m, x**2) / n_tr[:, None] - mu**2
    sd = var.clamp_min(0).sqrt()
    sd = torch.where(sd < 1e-5, torch.ones_like(sd), sd)

    # Which logit columns are free: classes present in the fold's training set, minus the first
    # one when there are exactly two (scikit-learn's binary parametrisation).
    onehot = torch.nn.functional.one_hot(yt, k).to(dtype)  # [batch, class]
    present = (m @ onehot) > 0  # [fold, class]
    free = present.clone()
    binary = present.sum(1) == 2
    free[binary, present[binary].float().argmax(1)] = False
    lam = 1 / (2 * C * n_tr)  # [fold]
    if precondition is None:
        precondition = d <= n_tr.min() and n_layers * n_f * d * d * x.element_size() <= 2**30
    if precondition:
        curv = torch.where(binary, 0.25, 1 / present.sum(1).clamp_min(1)).to(dtype)
        chol = _preconditioner(x, train, mu, sd, curv, lam)

    inv_sd = 1 / sd
    free = free.to(dtype)[:, None, :]  # [fold, 1, class]
    absent = torch.where(present, 0.0, -1e30).to(dtype)  # [fold, class]: never predicted
    wt = (train.T / n_tr).to(dtype)[..., None]  # [batch, fold, 1]: mean over the training rows
    dk = d * k
    y_idx = yt[None, :, None, None].expand(n_layers, n, n_f, 1)

    def logits(theta: torch.Tensor, xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = theta[..., :dk].reshape(n_layers, n_f, d, k)  # [layer, fold, d_model, class]
        if precondition:  # W = L^-T U
            w = torch.linalg.solve_triangular(chol.mT, w, upper=True)
        w = w * free
        v = w * inv_sd[..., None]  # weights on the (globally rescaled) activations
        c = theta[..., dk:] * free[:, 0] - torch.einsum("lfd,lfdk->lfk", mu, v) + absent
        v_flat = v.permute(0, 2, 1, 3).reshape(-1, d, n_f * k)  # [layer, d_model, fold * class]
        z = torch.bmm(xs, v_flat).view(-1, n, n_f, k) + c[:, None]  # [layer, batch, fold, class]
        return z, w

    def fg(theta: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per-problem loss [layer, fold] (float64 sums), gradient, and max |d loss / d (W, b)|. The
        gradient is by hand: this is the whole cost of the solver, and autograd doubles it."""
        z, w = logits(theta, x)
        z_max = z.amax(-1, keepdim=True)  # softmax by hand: torch's is slow for few classes
        p = (z - z_max).exp_()  # [layer, batch, fold, class]
        p_sum = p.sum(-1, keepdim=True)
        ce = (p_sum.log() + z_max - z.gather(-1, y_idx))[..., 0]  # [layer, batch, fold]
        loss = (ce * wt[..., 0]).double().sum(1) + lam.double() * w.double().pow(2).sum((-2, -1))
        g_z = p.div_(p_sum).sub_(onehot[:, None]).mul_(wt)  # d loss / d z
        g_b = g_z.sum(1) * free[:, 0]  # [layer, fold, class]
        g_v = torch.bmm(x.mT, g_z.view(n_layers, n, n_f * k))  # [layer, d_model, fold * class]
        g_v = g_v.view(-1, d, n_f, k).permute(0, 2, 1, 3) - mu[..., None] * g_b[:, :, None]
        g_w = (g_v * inv_sd[..., None] + 2 * lam[:, None, None] * w) * free
        g_u = torch.linalg.solve_triangular(chol, g_w, upper=False) if precondition else g_w
        stop = torch.maximum(g_w.abs().amax((-2, -1)), g_b.abs().amax(-1))
        return loss, torch.cat([g_u.flatten(2), g_b], -1), stop

    theta = torch.zeros(n_layers, n_f, dk + k, dtype=dtype, device=device)
    theta = _lbfgs(fg, theta, max_iter, tol)
    xs = ((torch.as_tensor(t, device=device) - shift) / scale).to(dtype)
    pred = logits(theta, xs)[0].argmax(-1)
    hit = (pred == yt[:, None]).to(torch.float64)  # [layer, batch, fold]
    test = (~train).T.to(torch.float64)  # [batch, fold]
    acc = (hit * test).sum(1) / test.sum(0)  # [layer, fold]
    return acc.mean(1).cpu().numpy()


def control_labels(y: Labels, groups: list[str] | None = None, seed: int = 0) -> Labels:
    """A control task (Hewitt & Liang 2019): labels a probe can memorise but not read off.

    Each group (e.g. an entity name) gets one label drawn from the empirical label distribution,
    shared by all its examples; with ``groups=None`` the labels are a random permutation of ``y``.
    """
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    if groups is None:
        return rng.permutation(y)
    if len(groups) != len(y):
        raise ValueError(f"groups has {len(groups)} entries for {len(y)} labels")
    names, inv = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    return y[rng.integers(0, len(y), size=len(names))][inv]


def probe_report(
    base_acts: Acts,
    tuned_acts: Acts,
    y: Labels,
    groups: list[str] | None = None,
    n_folds: int = 5,
    seed: int = 0,
    C: float = 1.0,
    solver: str = "torch",
) -> dict:
    """Within-model, transfer (base -> tuned) and control-task probe accuracies per layer.

    Returns plain lists: ``n, n_classes, majority, base, tuned, transfer, control_base,
    control_tuned, selectivity_base, selectivity_tuned``. The control task uses the same folds.
    """
    if solver not in ("torch", "sklearn"):
        raise ValueError(f"solver must be 'torch' or 'sklearn', got {solver!r}")
    probe = probe_torch if solver == "torch" else probe_sklearn
    y = np.asarray(y)
    _check(base_acts, y, tuned_acts)
    folds = cv_folds(y, n_folds, seed)
    yc = control_labels(y, groups, seed)
    out = {
        "base": probe(base_acts, y, folds, C=C),
        "tuned": probe(tuned_acts, y, folds, C=C),
        "transfer": probe(base_acts, y, folds, C=C, test_acts=tuned_acts),
        "control_base": probe(base_acts, yc, folds, C=C),
        "control_tuned": probe(tuned_acts, yc, folds, C=C),
    }
    out["selectivity_base"] = out["base"] - out["control_base"]
    out["selectivity_tuned"] = out["tuned"] - out["control_tuned"]
    _, counts = np.unique(y, return_counts=True)
    head = {"n": len(y), "n_classes": len(counts), "majority": float(counts.max() / len(y))}
    return head | {key: [float(v) for v in val] for key, val in out.items()}
