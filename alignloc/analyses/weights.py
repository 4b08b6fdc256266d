"""Weight differences per layer and module: where did post-training move the parameters?

Raw weights only (no folding or centring, which can create or hide differences). For each
parameter, ``||W_tuned - W_base||_F`` and ``||W_base||_F``; grouped by (layer, module) where the
module is ``attn``, ``mlp`` or ``norm`` inside a block, and ``embed``, ``final_norm``,
``unembed`` or ``other`` outside the blocks (layer -1).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from alignloc.models.families import Family

MODULES = ("attn", "mlp", "norm", "other")


def module_of(name: str, family: Family) -> tuple[int, str]:
    """``(layer, module)`` of a parameter name; layer is -1 outside the decoder blocks."""
    m = re.match(rf"^{re.escape(family.layers)}\.(\d+)\.(.*)$", name)
    if m is None:
        for module, path in (("embed", family.embed), ("final_norm", family.final_norm), ("unembed", family.unembed)):
            if name.startswith(path + "."):
                return -1, module
        return -1, "other"
    layer, rest = int(m.group(1)), m.group(2)
    if rest.startswith(family.attn + "."):
        return layer, "attn"
    if rest.startswith(family.mlp + "."):
        return layer, "mlp"
    if "norm" in rest or re.match(r"ln_?\d", rest):
        return layer, "norm"
    return layer, "other"


def param_diffs(
    base: Mapping[str, torch.Tensor], tuned: Mapping[str, torch.Tensor]
) -> dict[str, tuple[float, float, bool]]:
    """Per parameter name: ``(||tuned - base||_F^2, ||base||_F^2, bit-identical)``."""
    missing = sorted(set(base) ^ set(tuned))
    if missing:
        raise ValueError(f"base and tuned have different parameter names, e.g. {missing[:3]}")
    out = {}
    for name, wb in base.items():
        wt = tuned[name]
        if wb.shape != wt.shape:
            raise ValueError(f"parameter {name}: base shape {tuple(wb.shape)} != tuned {tuple(wt.shape)}")
        same = wb.dtype == wt.dtype and torch.equal(wb, wt)
        d = 0.0 if same else _chunked_sum_sq(wt, wb)
        out[name] = (d, _chunked_sum_sq(wb), same)
    return out


def _chunked_sum_sq(a: torch.Tensor, b: torch.Tensor | None = None, chunk: int = 2**22) -> float:
    """``||a - b||_F^2`` (``||a||_F^2`` without ``b``) in float32 chunks of ``chunk`` elements, so a
    large embedding needs 16 MB of scratch, not three copies of itself."""
    a, b = a.reshape(-1), None if b is None else b.reshape(-1)
    total = 0.0
    for s in range(0, a.numel(), chunk):
        x = a[s : s + chunk].float()
        if b is not None:
            x = x - b[s : s + chunk].float()
        total += float(x.pow(2).sum())
    return total


def weight_diff(base: Mapping[str, torch.Tensor], tuned: Mapping[str, torch.Tensor], family: Family, n_layers: int) -> dict:
    """Relative Frobenius norm of the weight change per layer and per (layer, module).

    Returns JSON-ready ``{"layers": [{"layer", "relative_frobenius", "identical", "modules":
    {module: rel}}] (one per block), "outside": {module: rel}, "identical_layers": [...],
    "changed_params": n}``. ``relative_frobenius = sqrt(sum ||dW||^2 / sum ||W_base||^2)``.
    """
    groups: dict[tuple[int, str], list[float]] = {}
    identical: dict[int, bool] = {}
    changed = 0
    for name, (d2, b2, same) in param_diffs(base, tuned).items():
        layer, module = module_of(name, family)
        acc = groups.setdefault((layer, module), [0.0, 0.0])
        acc[0] += d2
        acc[1] += b2
        identical[layer] = identical.get(layer, True) and same
        changed += not same

    def rel(keys: list[tuple[int, str]]) -> float:
        d2 = sum(groups[k][0] for k in keys)
        b2 = sum(groups[k][1] for k in keys)
        return (d2 / b2) ** 0.5 if b2 > 0 else (0.0 if d2 == 0 else float("inf"))

    layers = []
    for layer in range(n_layers):
        keys = [k for k in groups if k[0] == layer]
        layers.append({
            "layer": layer,
            "relative_frobenius": rel(keys),
            "identical": identical.get(layer, True),
            "modules": {k[1]: rel([k]) for k in sorted(keys, key=lambda k: k[1])},
        })
    outside = {k[1]: rel([k]) for k in sorted(groups) if k[0] == -1}
    return {
        "layers": layers,
        "outside": outside,
        "outside_identical": identical.get(-1, True),
        "identical_layers": [r["layer"] for r in layers if r["identical"]],
        "changed_params": changed,
    }
