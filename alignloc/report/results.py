"""Typed results of the four experiments, each the same data as its ``report.json``.

``LayerDiffResult``, ``LocalizeBenchResult``, ``ContextPriorResult`` and ``ProxyTuneResult`` name the
top-level fields of their report; the nested blocks (measures, verdict, rows, tiers, ...) stay the
JSON-ready dicts the report renderers read. ``to_json()`` is the ``report.json`` dict, key for key and in
the same order (``json_safe`` then turns NaN into null); ``from_json(data)`` reads one back, refusing a
``schema_version`` other than the one this alignloc writes, an unknown key or a missing one. The
experiment functions return these; a result also reads as its report dict (``result["verdict"]``, a
read-only ``Mapping``), so code written against the dict keeps working, while ``result.verdict`` is the
typed form. They live in ``report/`` because they are data that reports and figures read: nothing here
runs a model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from alignloc.errors import UserError


class ResultSchemaError(UserError, ValueError):
    """A result file this alignloc cannot read as its type: another schema version, or not that result."""


class JsonResult(Mapping):
    """A result with named top-level fields, read and written as its report's JSON dict."""

    KIND: ClassVar[str] = "result"  # how errors name it: "layer-diff report"
    SCHEMA_VERSION: ClassVar[int] = 1
    OPTIONAL: ClassVar[tuple[str, ...]] = ()  # keys present only when their value is not None
    UNVERSIONED: ClassVar[bool] = False  # True: a report without schema_version (written before it was) reads as 1

    def to_json(self) -> dict:
        """The ``report.json`` dict (NaN kept as floats; ``alignloc.report.json_safe`` makes it strict JSON)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in self.OPTIONAL and value is None:
                continue
            out[f.name] = value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str | None = None):
        """The result of ``data`` (a ``report.json`` as read, or ``to_json()``); ``ResultSchemaError`` for another
        schema version or a dict that is not this result (``source``: the file, named in the message)."""
        where = f"{source}: " if source else ""
        if not isinstance(data, Mapping):
            raise ResultSchemaError(f"{where}a {cls.KIND} is a JSON object, got {type(data).__name__}")
        data = dict(data)
        if "schema_version" not in data and cls.UNVERSIONED:
            data = {"schema_version": 1, **data}
        version = data.get("schema_version")
        if version != cls.SCHEMA_VERSION:
            wrote = f" (written by alignloc {data['alignloc_version']})" if "alignloc_version" in data else ""
            said = "has no schema_version" if version is None else f"has schema version {version!r}"
            raise ResultSchemaError(f"{where}this {cls.KIND} {said}{wrote}; this alignloc reads version "
                                    f"{cls.SCHEMA_VERSION} (rerun the experiment with this alignloc, or read the file "
                                    "with the version that wrote it)")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in data if k not in names]
        required = [f.name for f in dataclasses.fields(cls) if f.name not in cls.OPTIONAL]
        missing = [k for k in required if k not in data]
        if unknown or missing:
            parts = ([f"unknown key(s) {', '.join(unknown)}"] if unknown else []) + (
                [f"missing key(s) {', '.join(missing)}"] if missing else [])
            raise ResultSchemaError(f"{where}not a {cls.KIND} of schema version {cls.SCHEMA_VERSION}: {'; '.join(parts)}")
        return cls(**data)

    # the report dict, read-only: result["verdict"], result.get("causal"), dict(result)
    def __getitem__(self, key: str) -> Any:
        return self.to_json()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_json())

    def __len__(self) -> int:
        return len(self.to_json())

    __hash__ = None  # mutable blocks inside


@dataclass(eq=True, kw_only=True)
class LayerDiffResult(JsonResult):
    """layer-diff's report (``experiments.layerdiff.layer_diff``); the blocks are described in docs/measures.md."""

    KIND: ClassVar[str] = "layer-diff report"
    SCHEMA_VERSION: ClassVar[int] = 2
    OPTIONAL: ClassVar[tuple[str, ...]] = ("causal", "answers")

    schema_version: int = SCHEMA_VERSION
    schema_notes: str = ""
    alignloc_version: str
    created: str
    pair: dict
    ground_truth: dict | None = None
    prompts: dict
    settings: dict
    measures: dict
    control: dict | None = None
    verdict: dict
    timings: dict = field(default_factory=dict)
    causal: dict | None = None
    answers: dict | None = None


@dataclass(eq=True, kw_only=True)
class LocalizeBenchResult(JsonResult):
    """localize-bench's report (``experiments.localize_bench.localize_bench``): per tier, every method's hits
    and scores on every organism and on the null pair. Version 1 added ``schema_version``; a report written
    before (the same keys otherwise) reads as version 1."""

    KIND: ClassVar[str] = "localize-bench report"
    UNVERSIONED: ClassVar[bool] = True
    OPTIONAL: ClassVar[tuple[str, ...]] = ("seeds",)

    schema_version: int = 1
    size: str
    n_prompts: int
    min_gap: float
    flag_at: float
    methods_run: list
    tiers: dict
    seeds: list | None = None  # the size and its seed variants whose organisms are pooled (``--seeds``)


@dataclass(eq=True, kw_only=True)
class ContextPriorResult(JsonResult):
    """context-prior's report (``experiments.contextprior.context_prior_report``): every configuration's
    row, the searched heads and the verdict."""

    KIND: ClassVar[str] = "context-prior report"
    OPTIONAL: ClassVar[tuple[str, ...]] = ("conflicts",)

    schema_version: int = 1
    alignloc_version: str
    created: str
    model: dict
    n: dict
    layers: list
    instruction: str
    budget: dict
    rows: list
    searched_heads: list
    verdict: dict
    seconds: float
    conflicts: dict | None = None


@dataclass(eq=True, kw_only=True)
class ProxyTuneResult(JsonResult):
    """proxy-tune's report (``experiments.proxytune.proxy_tune_report``): every configuration, the shift
    analysis, the EFT grid, the verdict; a contrast organism side by side and the large model's layer-diff
    when run."""

    KIND: ClassVar[str] = "proxy-tune report"
    OPTIONAL: ClassVar[tuple[str, ...]] = ("contrast", "side_by_side", "weight_finetuning_layer_diff")

    schema_version: int = 1
    alignloc_version: str
    created: str
    models: dict
    n: dict
    configs: dict
    betas: list
    shift: dict
    eft_grid: dict | None = None
    verdict: dict
    contrast: dict | None = None
    side_by_side: dict | None = None
    weight_finetuning_layer_diff: dict | None = None
