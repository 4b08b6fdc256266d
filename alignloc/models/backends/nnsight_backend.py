"""The nnsight backend: one nnsight trace per batch, locally or on NDIF.

Sites are read at the same module paths as the ``hf`` backend (``alignloc.models.families``):
``family.sites[kind] = (sub-path, "in" | "out")`` inside block ``family.layers[L]``, where "in"
is the module's first input (nnsight ``.input``) and "out" its output (first element of a
tuple). Values are saved in forward order and the trace stops right after the last one, so the
later blocks and the unembedding never run.

Remote execution (NDIF, https://ndif.us) runs the same trace on a model that NDIF hosts, for
checkpoints too large to load here. It needs an API key in the environment variable
``NDIF_API_KEY`` (or saved with ``nnsight.CONFIG.set_default_api_key``) and the model's Hugging
Face hub id: load the model by its hub id (``load_model("meta-llama/Llama-3.1-8B")``), or pass
``repo_id=`` when it was loaded from a directory holding the same checkpoint. Then
``NNsightBackend(loaded, remote=True)`` (or ``remote="https://host"`` for another NDIF host)
sends each batch's token ids to NDIF and downloads only the saved sites; ``loaded.model`` is not
run (a small meta copy is built from the hub config to name the modules). ``remote="local"``
runs nnsight's local simulation of that path -- the trace is serialized and deserialized with
non-installed modules hidden, as on the server -- against ``loaded.model``, offline; the test
suite uses it to check that the trace is remote-safe.

Side effect: wrapping ``loaded.model`` makes nnsight install an inert controller as each
module's ``forward`` (no torch hooks, same outputs; outside a trace it calls the original).
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from alignloc.models.backends.base import CheckedRun
from alignloc.models.pair import LoadedModel
from alignloc.models.refs import ModelRefError, split_zoo
from alignloc.sites import Site

# (site, envoy, "in" | "out"): one value to save, in forward order.
Plan = list[tuple[Site, object, str]]


@contextmanager
def _no_deprecations() -> Iterator[None]:
    """Hide nnsight's deprecation notices (only those) for the block."""
    import nnsight

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=nnsight.NNsightDeprecationWarning)
        yield


def _envoy(root, path: str):
    """The envoy at a dotted module path ('' is ``root``); numeric parts index lists."""
    env = root
    for part in filter(None, path.split(".")):
        env = env[int(part)] if part.isdigit() else getattr(env, part)
    return env


def _trace_sites(
    model,
    reads: list[tuple[object, str]],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    remote,
) -> list:
    """Run one trace and return the values of ``reads`` ((envoy, "in" | "out"), in forward order).

    The body uses only builtins, nnsight, tensors and envoys (no alignloc objects), so that it
    can be serialized and run on an NDIF server where alignloc is not installed.
    """
    import nnsight

    with model.trace(input_ids=input_ids, attention_mask=attention_mask, remote=remote) as tracer:
        values = []
        for envoy, io in reads:
            value = envoy.input if io == "in" else envoy.output
            if isinstance(value, (tuple, list)):
                value = value[0]
            values.append(value)
        values = nnsight.save(values)
        tracer.stop()  # skip the later blocks and the unembedding
    return values


def _remote_repo_id(loaded: LoadedModel, repo_id: str | None) -> str:
    """The hub id to run remotely, or a ModelRefError saying why there is none."""
    if repo_id is None:
        if (
            loaded.path is not None
            or split_zoo(loaded.ref) is not None
            or Path(loaded.ref).exists()
        ):
            raise ModelRefError(
                f"{loaded.ref}: remote (NDIF) execution needs a Hugging Face hub id that NDIF hosts, "
                "but this model was loaded from a local directory. Load it by its hub id, or pass "
                "repo_id='org/name' naming the same checkpoint on the hub."
            )
        repo_id = loaded.ref
    if Path(repo_id).exists() or split_zoo(repo_id) is not None or repo_id.count("/") != 1:
        raise ModelRefError(
            f"{repo_id}: not a hub id of the form 'org/name'; NDIF runs hub checkpoints only"
        )
    if loaded.adapter is not None:
        raise ModelRefError(
            f"{loaded.ref}: has a locally merged LoRA adapter ({loaded.adapter}); NDIF would run "
            f"{repo_id} without it. Push the merged model to the hub and pass its id as repo_id."
        )
    return repo_id


def _api_key() -> str | None:
    import nnsight

    return os.environ.get("NDIF_API_KEY") or nnsight.CONFIG.API.APIKEY


class NNsightBackend(CheckedRun):
    """Record sites in an nnsight trace of ``loaded.model``, or of a hub model on NDIF.

    ``remote``: False (local), ``"local"`` (local simulation of the remote path), True (NDIF at
    ``nnsight.CONFIG.API.HOST``) or an NDIF host URL. ``repo_id``: the hub id to run remotely
    (default: ``loaded.ref`` when the model was loaded from the hub). See the module docstring.
    """

    name = "nnsight"

    def __init__(self, loaded: LoadedModel, remote: bool | str = False, repo_id: str | None = None):
        from nnsight import TransformersModel

        if (
            isinstance(remote, str)
            and remote != "local"
            and not remote.startswith(("http://", "https://"))
        ):
            raise ValueError(
                f"remote must be False, True, 'local' or an NDIF host URL, got {remote!r}"
            )
        self.loaded = loaded
        self.remote = remote
        self.is_remote = bool(remote) and remote != "local"
        # nnsight sets padding_side/pad on the tokenizer it is given: hand it a copy. Batches
        # arrive right-padded, so keep right padding (no position_ids rewriting).
        tokenizer = copy.deepcopy(loaded.tokenizer)
        with _no_deprecations():
            if self.is_remote:
                self.repo_id = _remote_repo_id(loaded, repo_id)
                if not _api_key():
                    raise ModelRefError(
                        f"{self.repo_id}: remote (NDIF) execution needs an API key; set NDIF_API_KEY "
                        "(register at https://ndif.us) or call nnsight.CONFIG.set_default_api_key(key)"
                    )
                try:  # meta-loads the architecture from the hub config; weights stay on NDIF
                    self.model = TransformersModel(
                        self.repo_id, task="text-generation", tokenizer=tokenizer
                    )
                except Exception as e:  # hub errors come in many types
                    raise ModelRefError(
                        f"{self.repo_id}: cannot build the nnsight model for NDIF: {e}"
                    ) from e
            else:
                self.repo_id = repo_id
                self.model = TransformersModel(loaded.model, tokenizer=tokenizer)
        self.model.tokenizer.padding_side = "right"

    def _plan(self, sites: list[Site]) -> Plan:
        family = self.loaded.family
        blocks = _envoy(self.model, family.layers)
        plan = []
        for site in sorted(sites, key=lambda s: s.order):
            sub, io = family.sites[site.kind]
            plan.append((site, _envoy(blocks[site.layer], sub), io))
        return plan

    def _run(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, sites: list[Site]) -> dict[Site, torch.Tensor]:
        lm = self.loaded
        if not self.is_remote:
            dev = lm.device  # the embedding's device (the first shard of a device map)
            input_ids, attention_mask = input_ids.to(dev), attention_mask.to(dev)
        plan = self._plan(sites)
        with _no_deprecations(), torch.no_grad():
            reads = [(envoy, io) for _, envoy, io in plan]
            values = _trace_sites(self.model, reads, input_ids, attention_mask, self.remote)
        out = {site: v.detach() for (site, _, _), v in zip(plan, values, strict=True)}
        if self.is_remote:
            out = {s: v.to(lm.device) for s, v in out.items()}
        return out
