"""Canonical site names and position selectors, shared by every backend and architecture.

A *site* is a kind (``resid_pre|resid_mid|resid_post|attn_out|mlp_out``) at a layer, written
``resid_post.3``. ``resid_post.*`` or a bare ``resid_post`` means every layer. A *position
selector* says which token positions of each prompt are kept: ``last``, ``all``, an integer index
(negative from the end) or a per-prompt named position from the prompt file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from alignloc.errors import UserError

SITE_KINDS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")
# Order in which sites of one layer are produced in a forward pass (resid_pre first).
_KIND_ORDER = {k: i for i, k in enumerate(("resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post"))}


class SiteError(UserError, ValueError):
    """A site or position specification cannot be parsed or does not exist in a model."""


@dataclass(frozen=True, order=True)
class Site:
    """One activation site: ``kind`` at ``layer`` (0-based)."""

    layer: int
    kind: str

    def __post_init__(self) -> None:
        if self.kind not in SITE_KINDS:
            raise SiteError(f"unknown site kind {self.kind!r} (use one of {', '.join(SITE_KINDS)})")
        if self.layer < 0:
            raise SiteError(f"site layer must be >= 0, got {self.layer}")

    @property
    def name(self) -> str:
        """The canonical string form, e.g. ``resid_post.3``."""
        return f"{self.kind}.{self.layer}"

    @property
    def order(self) -> tuple[int, int]:
        """Sort key in forward-pass order: by layer, then by position inside the block."""
        return (self.layer, _KIND_ORDER[self.kind])

    def __str__(self) -> str:
        return self.name


def _layer_part(part: str) -> range | int:
    """One comma-separated part of a layer selector: ``range`` for ``2-5``, an int (maybe negative) otherwise."""
    m = re.fullmatch(r"(\d+)-(\d+)", part)
    if m:
        lo, hi = int(m.group(1)), int(m.group(2))
        if lo > hi:
            raise SiteError(f"layer range {part!r} is empty (write it low-high, e.g. 1-3)")
        return range(lo, hi + 1)
    if re.fullmatch(r"-?\d+", part):
        return int(part)
    raise SiteError(f"cannot parse layer {part!r} (use e.g. 3, 0,2,5, 2-5, -1 or *)")


def check_layers_syntax(spec: str | None) -> None:
    """SiteError unless ``spec`` is a well-formed layer selector (the range is checked by ``parse_layers``)."""
    if spec is not None and spec not in ("", "*", "all"):
        for part in spec.split(","):
            _layer_part(part.strip())


def parse_layers(spec: str | None, n_layers: int) -> list[int]:
    """Parse ``"*"``, ``"3"``, ``"0,2,5"``, ``"2-5"`` or ``"-1"`` into sorted layer indices."""
    if spec is None or spec in ("", "*", "all"):
        return list(range(n_layers))
    layers: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        chosen = _layer_part(part)
        if isinstance(chosen, int):
            chosen = [chosen + n_layers if chosen < 0 else chosen]
        elif chosen.stop > n_layers:
            chosen = [chosen.stop - 1]  # reported as out of range below, without listing a huge range
        for layer in chosen:
            if not 0 <= layer < n_layers:
                raise SiteError(f"layer {part} is out of range: the model has {n_layers} layers (0..{n_layers - 1})")
            layers.add(layer)
    return sorted(layers)


def check_sites_syntax(spec: str, layers: str | None = None) -> None:
    """SiteError unless ``spec`` (and ``layers``) are well-formed site and layer selectors."""
    check_layers_syntax(layers)
    parts = [raw.strip() for raw in spec.split(",") if raw.strip()]
    if not parts:
        raise SiteError(f"no sites in {spec!r} (e.g. resid_post or resid_post.3,mlp_out)")
    for raw in parts:
        kind, _, layer_spec = raw.partition(".")
        if kind not in SITE_KINDS:
            raise SiteError(f"unknown site {raw!r} (site kinds are {', '.join(SITE_KINDS)})")
        check_layers_syntax(layer_spec)


def parse_sites(spec: str | list[str], n_layers: int, layers: str | None = None) -> list[Site]:
    """Parse ``"resid_post,attn_out.3,mlp_out.*"`` into Sites, sorted in forward order.

    A kind without ``.layer`` uses ``layers`` (default: every layer).
    """
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    out: set[Site] = set()
    for raw in parts:
        raw = raw.strip()
        if not raw:
            continue
        kind, _, layer_spec = raw.partition(".")
        if kind not in SITE_KINDS:
            raise SiteError(f"unknown site {raw!r} (site kinds are {', '.join(SITE_KINDS)})")
        for layer in parse_layers(layer_spec or layers, n_layers):
            out.add(Site(layer, kind))
    if not out:
        raise SiteError(f"no sites in {spec!r} (e.g. resid_post or resid_post.3,mlp_out)")
    return sorted(out, key=lambda s: s.order)


def parse_site(name: str) -> Site:
    """Parse one canonical site name such as ``resid_post.3``."""
    kind, _, layer = name.partition(".")
    try:
        return Site(int(layer), kind)
    except ValueError:
        raise SiteError(f"cannot parse site {name!r} (expected KIND.LAYER, e.g. resid_post.3)") from None


@dataclass(frozen=True)
class Positions:
    """A position selector: ``last``, ``all``, an int index, or a named per-prompt position."""

    mode: str  # "last" | "all" | "index" | "named"
    index: int | None = None
    name: str | None = None

    @property
    def spec(self) -> str:
        """The selector as the user writes it (``last``, ``all``, ``-2``, ``subject``)."""
        if self.mode == "index":
            return str(self.index)
        if self.mode == "named":
            return str(self.name)
        return self.mode

    @property
    def keeps_all(self) -> bool:
        """True when every token position is kept (tensors then carry a ``pos`` axis)."""
        return self.mode == "all"


def parse_positions(spec: str | int) -> Positions:
    """Parse a position selector (``last``, ``all``, ``-1``, ``3``, or a named position)."""
    if isinstance(spec, int):
        return Positions("index", index=spec)
    spec = spec.strip()
    if spec in ("last", "all"):
        return Positions(spec)
    if re.fullmatch(r"-?\d+", spec):
        return Positions("index", index=int(spec))
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", spec):
        return Positions("named", name=spec)
    raise SiteError(f"cannot parse positions {spec!r} (use last, all, an integer, or a name from the prompts' 'positions')")
