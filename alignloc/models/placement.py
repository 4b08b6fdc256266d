"""Where a model runs and in what precision: ``device``, ``compute_dtype`` and ``device_map``.

    p = resolve_placement("auto", "auto")         # cuda:0 + bfloat16 with a GPU, cpu + float32 without
    AutoModelForCausalLM.from_pretrained(d, **p.from_pretrained_kwargs())

Weights are loaded straight onto the device in the compute dtype (``dtype=`` and ``device_map=``
of ``from_pretrained``), never as a float32 host copy moved afterwards. ``device_map`` (``auto``,
``balanced``, ``sequential`` or an explicit ``{module: device}`` dict) shards one model over
several GPUs, the CPU and disk with accelerate; with a device map ``device`` must stay ``auto``.
Every value is checked (``check_*``) before anything is loaded, with a one-line error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from alignloc.errors import UserError

DEVICE_HELP = "auto | cpu | cuda | cuda:N | mps"
COMPUTE_DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class PlacementError(UserError, ValueError):
    """A device, compute dtype or device map that cannot be used here (e.g. cuda without a GPU)."""


@dataclass(frozen=True)
class Placement:
    """A resolved placement: a concrete device, a torch dtype, and an optional accelerate device map."""

    device: str  # "cpu", "cuda:0", "mps"; with a device map, where inputs go (the embedding's device)
    dtype: torch.dtype
    device_map: str | dict | None = None
    offload_folder: str | None = None

    @property
    def cpu_only(self) -> bool:
        """True when every weight computes on the CPU (a device map of cpu/disk only counts)."""
        if self.device_map is None:
            return self.device == "cpu"
        if isinstance(self.device_map, dict):
            return all(str(v) in ("cpu", "disk") for v in self.device_map.values())
        return _cuda_count() == 0

    def from_pretrained_kwargs(self) -> dict:
        """``dtype`` and ``device_map`` for ``from_pretrained``: weights land on the device in the dtype."""
        kw: dict = {"dtype": self.dtype, "device_map": self.device_map if self.device_map is not None else self.device}
        if self.offload_folder is not None:
            kw["offload_folder"] = self.offload_folder
        return kw


def _cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _mps() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def check_device(spec: str, option: str = "--device", n_cuda: int | None = None, mps: bool | None = None) -> str:
    """The concrete device for ``spec`` (``auto`` -> ``cuda:0`` if a GPU is visible, ``mps``, else ``cpu``).

    ``n_cuda`` / ``mps`` override what torch reports (tests of the GPU paths on a CPU machine).
    """
    n_cuda = _cuda_count() if n_cuda is None else n_cuda
    mps = _mps() if mps is None else mps
    if not isinstance(spec, str) or not _DEVICE.match(spec):
        raise PlacementError(f"{option} {spec}: not a device (use one of {DEVICE_HELP})")
    if spec == "auto":
        return "cuda:0" if n_cuda else ("mps" if mps else "cpu")
    if spec.startswith("cuda"):
        if not n_cuda:
            raise PlacementError(f"{option} {spec}: no CUDA device is visible (use {option} cpu or auto)")
        index = int(spec.split(":")[1]) if ":" in spec else 0
        if index >= n_cuda:
            raise PlacementError(f"{option} {spec}: only {n_cuda} CUDA device(s) are visible "
                                 f"(use cuda:0..cuda:{n_cuda - 1})")
        return f"cuda:{index}"
    if spec == "mps" and not mps:
        raise PlacementError(f"{option} mps: the Apple MPS backend is not available (use {option} cpu or auto)")
    return spec


def check_dtype(spec: str | torch.dtype, device: str, option: str = "--compute-dtype") -> torch.dtype:
    """The torch dtype for ``spec`` on ``device`` (``auto`` -> bfloat16 on a GPU, float32 on cpu)."""
    if isinstance(spec, torch.dtype):
        name = str(spec).removeprefix("torch.")
    else:
        name = spec
    if name not in COMPUTE_DTYPES:
        raise PlacementError(f"{option} {spec}: not a compute dtype (use one of {', '.join(COMPUTE_DTYPES)})")
    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, name)


def check_device_map(spec: str | dict | None, device: str, option: str = "--device-map") -> str | dict | None:
    """``spec`` if it is None, an accelerate strategy name or a ``{module: device}`` dict; device must be auto."""
    if spec is None or (isinstance(spec, str) and spec == "none"):
        return None
    if isinstance(spec, str) and spec not in DEVICE_MAPS:
        raise PlacementError(f"{option} {spec}: not a device map (use none, {', '.join(DEVICE_MAPS)})")
    if not isinstance(spec, (str, dict)):
        raise PlacementError(f"{option}: expected a strategy name or a {{module: device}} dict, got {type(spec).__name__}")
    if device != "auto":
        raise PlacementError(f"{option} {spec if isinstance(spec, str) else 'DICT'}: a device map places every layer "
                             f"itself (leave --device at auto, not {device})")
    return spec


def resolve_placement(device: str = "auto", compute_dtype: str | torch.dtype = "auto",
                      device_map: str | dict | None = None, offload_folder: str | None = None,
                      n_cuda: int | None = None, mps: bool | None = None) -> Placement:
    """Check and resolve the three placement options together (nothing is loaded)."""
    dmap = check_device_map(device_map, device)
    dev = check_device(device, "--device", n_cuda, mps)
    if dmap is not None and isinstance(compute_dtype, str) and compute_dtype == "auto":
        # a map that may reach a GPU computes there in bf16; a CPU/disk-only map in fp32
        n = _cuda_count() if n_cuda is None else n_cuda
        dtype = torch.bfloat16 if n and _map_uses_gpu(dmap) else torch.float32
    else:
        dtype = check_dtype(compute_dtype, dev)
    return Placement(device=dev, dtype=dtype, device_map=dmap, offload_folder=offload_folder)


def _map_uses_gpu(dmap: str | dict) -> bool:
    if isinstance(dmap, str):
        return True
    return any(str(v) not in ("cpu", "disk", "meta") for v in dmap.values())


def input_device(model: torch.nn.Module) -> torch.device:
    """Where a model's inputs go: its embedding's device (the first shard of a device map)."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    for p in (emb.parameters() if emb is not None else model.parameters()):
        if p.device.type != "meta":
            return p.device
    return torch.device("cpu")


def is_offloaded(model: torch.nn.Module) -> bool:
    """True when some weights live off the model (accelerate disk/cpu offload: parameters on ``meta``)."""
    return any(p.device.type == "meta" for p in model.parameters())


def resident_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` with offloaded (``meta``) tensors read from accelerate's offload store."""
    state = model.state_dict()
    if not any(t.device.type == "meta" for t in state.values()):
        return state
    modules = dict(model.named_modules())
    out = {}
    for name, t in state.items():
        if t.device.type == "meta":
            owner, _, leaf = name.rpartition(".")
            hook = getattr(modules[owner], "_hf_hook", None)
            weights = getattr(hook, "weights_map", None)
            if weights is None:
                raise PlacementError(f"{name}: offloaded weight with no accelerate offload store to read it from")
            t = weights[leaf]
        out[name] = t
    return out
