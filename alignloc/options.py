"""Check option values before any work: nothing is loaded or written until every option is valid.

Each check raises ``UsageError`` naming the option (``--batch-size: must be >= 1, got 0``); the
command line adds ``(see alignloc CMD --help)``. Model references are checked without loading
weights (``model_ref``): a zoo name against the zoo's names, a directory against the files its
loader would read.
"""

from __future__ import annotations

import math
from pathlib import Path

from alignloc.errors import UsageError, UserError


def at_least(option: str, value: int, lo: int = 1) -> int:
    """``value`` if it is >= ``lo``."""
    if value < lo:
        raise UsageError(f"{option}: must be >= {lo}, got {value}")
    return value


def seed(value: int) -> int:
    """``--seed`` as numpy and scikit-learn accept it: 0 <= seed < 2**32."""
    if not 0 <= value < 2**32:
        raise UsageError(f"--seed: must be in 0..{2**32 - 1}, got {value}")
    return value


def one_of(option: str, value: str, choices) -> str:
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        raise UsageError(f"{option}: {value!r} is not one of {', '.join(choices)}")
    return value


def subset(option: str, spec: str, choices) -> list[str]:
    """A non-empty comma list, each item one of ``choices`` and none repeated."""
    items = [x.strip() for x in spec.split(",") if x.strip()]
    bad = [x for x in items if x not in choices]
    if not items or bad:
        raise UsageError(f"{option}: {spec!r} is not a comma list of {', '.join(choices)}")
    if len(set(items)) < len(items):
        raise UsageError(f"{option}: {spec!r} names an item twice")
    return items


def betas(spec: str, required: float = 1.0) -> list[float]:
    """A comma list of distinct finite numbers that includes ``required`` (proxy-tune reports beta = 1)."""
    try:
        values = [float(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--beta: {spec!r} is not a comma-separated list of numbers") from None
    if not values:
        raise UsageError(f"--beta: {spec!r} holds no number")
    if not all(math.isfinite(v) for v in values):
        raise UsageError(f"--beta: {spec!r} holds a value that is not finite")
    if len({f"{v:g}" for v in values}) < len(values):
        raise UsageError(f"--beta: {spec!r} repeats a value")
    if required not in values:
        raise UsageError(f"--beta: {spec!r} must include {required:g}: the report compares beta = {required:g} "
                         "with weight fine-tuning")
    return values


def organism(option: str, name: str, other: str | None = None) -> str:
    """A zoo organism tuned from ``base`` (``proxy-tune --zoo`` builds its ``-large`` twin), not ``other``."""
    from alignloc.models.refs import zoo_resolver

    if name.endswith("-large"):
        raise UsageError(f"{option}: name the organism tuned from base; its -large twin is built for comparison")
    if name == other:
        raise UsageError(f"{option}: {name!r} is the --organism itself; name another organism to compare with")
    zoo_resolver(f"zoo:{name}").check_name(name)
    return name


def windows(spec: str | None, n_layers: int | None = None) -> list[int] | None:
    """``--windows``: a comma list of window sizes, each >= 1 (and <= ``n_layers`` when known)."""
    if spec is None:
        return None
    try:
        sizes = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--windows: {spec!r} is not a comma list of window sizes such as 1,2,4") from None
    if not sizes or min(sizes) < 1 or (n_layers is not None and max(sizes) > n_layers):
        top = f"..{n_layers} (the layer count)" if n_layers is not None else " or more"
        raise UsageError(f"--windows: {spec!r}: every size must be in 1{top}")
    return sorted(set(sizes))


def _site_error(option: str, e: UserError) -> UsageError:
    return UsageError(f"{option}: {e}")


def sites(spec: str, layers: str | None, n_layers: int | None = None) -> None:
    """``--sites``/``--layers`` well-formed, and within ``n_layers`` when it is known."""
    from alignloc.sites import SiteError, check_sites_syntax, parse_sites

    if layers is not None:
        layer_spec(layers, n_layers)
    try:
        check_sites_syntax(spec)
        if n_layers is not None:
            parse_sites(spec, n_layers, layers)
    except SiteError as e:
        raise _site_error("--sites", e) from None


def layer_spec(spec: str, n_layers: int | None = None) -> None:
    """``--layers`` well-formed, and within ``n_layers`` when it is known."""
    from alignloc.sites import SiteError, check_layers_syntax, parse_layers

    try:
        check_layers_syntax(spec)
        if n_layers is not None:
            parse_layers(spec, n_layers)
    except SiteError as e:
        raise _site_error("--layers", e) from None


def positions(spec: str, prompts: list | None = None) -> None:
    """``--positions`` well-formed; a named position present in every prompt (when the prompts are known)."""
    from alignloc.sites import SiteError, parse_positions
    from alignloc.tokens import check_named_positions

    try:
        pos = parse_positions(spec)
    except SiteError as e:
        raise _site_error("--positions", e) from None
    if prompts is not None:
        check_named_positions(prompts, pos)


def model_ref(ref: str, allow_pickle: bool = False) -> int | None:
    """Check a model reference without loading it; the layer count when its config is on disk, else None."""
    from alignloc.models.refs import read_config, resolve_ref, split_zoo, zoo_resolver

    zoo = split_zoo(ref)
    if zoo is not None:
        organisms = zoo_resolver(ref)
        organisms.check_name(zoo.name, zoo.size)
        try:
            directory = organisms.resolve(zoo.name, zoo.size, build_missing=False).base  # both sides share the layer count
        except FileNotFoundError:  # not built yet: built (and checked) when loaded
            return None
    else:
        r = resolve_ref(ref, allow_pickle)
        if r.kind != "local":
            return None
        directory = Path(r.location)
    cfg = read_config(directory)
    n = next((cfg[k] for k in ("num_hidden_layers", "n_layer", "num_layers") if isinstance(cfg.get(k), int)), None)
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None


def model_refs(*refs: str | None, allow_pickle: bool) -> int | None:
    """Check every model reference given (none is loaded); the layer count when a config says it."""
    counts = [model_ref(r, allow_pickle) for r in refs if r is not None]
    return min((n for n in counts if n is not None), default=None)


def prompts_for(model: str, prompts: Path | None, what: str = "the pair is an organism (zoo:NAME)") -> list:
    """``--prompts`` read and validated now, or an organism's bundled prompts for ``zoo:NAME`` (built on first use)."""
    from alignloc.models.refs import split_zoo, zoo_resolver
    from alignloc.prompts import PromptFormatError

    if prompts is not None:
        return prompt_file(prompts)
    zoo = split_zoo(model)
    if zoo is None:
        raise PromptFormatError(f"--prompts is required unless {what} (give a JSONL prompt file)")
    return zoo_resolver(model).prompts(zoo.name, zoo.size)


def prompt_file(path: Path | None) -> list | None:
    """The prompts of ``--prompts`` (validated now, before any model is loaded), or None."""
    from alignloc.prompts import load_prompts

    return None if path is None else load_prompts(path)


def placement(device: str, compute_dtype: str, device_map: str | None) -> dict:
    """``--device``/``--compute-dtype``/``--device-map`` checked against this machine (cuda without a
    GPU is refused here, before loading); the ``load_pair``/``load_model`` keywords."""
    from alignloc.models.placement import resolve_placement

    resolve_placement(device, compute_dtype, device_map)
    return {"device": device, "compute_dtype": compute_dtype, "device_map": None if device_map in (None, "none") else device_map}


def conflict_set(name: str | None, prompts: Path | None, sets: tuple[str, ...]) -> str | None:
    """``--conflicts``: one of the named conflict ``sets`` (``experiments.conflicts.SETS``), not given with ``--prompts``."""
    if name is None:
        return None
    if prompts is not None:
        raise UsageError("--conflicts and --prompts: give one of them (a named conflict set or a prompt file)")
    return one_of("--conflicts", name, sets)
