"""Linear layers on the CPU through oneDNN's packed weights: the same float32 products, two to four times faster.

torch multiplies a float32 ``nn.Linear`` on the CPU with MKL, which on this project's machines (AMD EPYC,
AVX-512) reached 160-200 GFLOPS on two threads; oneDNN, which torch also ships, reached 450 with its weights
reordered once into its blocked layout (``torch.ops.mkldnn._reorder_linear_weight``). A forward of 8 prompts
of the SmolLM2-135M configuration took 210 ms with torch's kernel and 106 ms with this one, and the 262k-row
unembedding of 8 positions of the Gemma-3-270M configuration 77 ms and 17 ms (``benchmarks/linear.py``). The products are float32 both ways (sums in another
order: 2e-6 of the activations' scale); what a run computes is the same to that rounding.

``use_packed_linears(model)`` turns every plain ``nn.Linear`` of a model whose weight holds at least
``MIN_WEIGHT`` values (below it torch's kernel was as fast) into a ``PackedLinear``, in place: the same
parameters, whose forward takes the packed kernel when it can and torch's otherwise:

- only with float32 weights and inputs on the CPU, and when no gradient is wanted (grad mode off, or neither
  the input nor the weight requires one): attribution's backward passes and training run torch's kernel;
- the packed copy is made at the first product and kept per weight storage (the two last ones a module
  has held: grafting exchanges storages between the two models of a pair, ``causal.graft.swapped``), and
  made again when the weight has changed since: another storage, its version counter moved (any in-place
  write through the parameter), or a strided sample of its values (one per row) differs, which catches a
  write through ``.data`` that the counter does not see and that changes a sampled value (a rank-one edit
  changes them all);
- the packed copies of all models together stay under a quarter of the machine's memory
  (``budget_bytes``); past that a layer runs torch's kernel.

``ALIGNLOC_LINEAR=torch`` in the environment leaves every model as it is, as does a torch build without
oneDNN, or one whose packed product disagrees with torch's on a probe. Models sharded by accelerate
(``hf_device_map``) are left alone.
"""

from __future__ import annotations

import os
from functools import cache

import torch
import torch.nn.functional as F
from jaxtyping import Float

MIN_WEIGHT = 128 * 512  # weights with fewer values: torch's kernel was as fast or faster (64 x 256: x0.6 to x1.1)
KEEP = 2  # packed storages a layer keeps: its own and the other model's while they are exchanged
_held = [0]  # bytes of packed copies alive, all models together


@cache
def available() -> bool:
    """Whether this torch build has oneDNN's packed linear and it agrees with ``F.linear`` on a probe (float32
    rounding), and ``ALIGNLOC_LINEAR`` is not ``torch``."""
    if os.environ.get("ALIGNLOC_LINEAR") == "torch" or not torch.backends.mkldnn.is_available():
        return False
    try:
        g = torch.Generator().manual_seed(0)
        x, w, b = (torch.randn(s, generator=g) for s in ((5, 128), (512, 128), (512,)))
        got = _product(x, torch.ops.mkldnn._reorder_linear_weight(w, None), b)
    except (RuntimeError, AttributeError):
        return False
    return bool(torch.allclose(got, F.linear(x, w, b), rtol=1e-4, atol=1e-4))


def budget_bytes() -> int:
    """The most bytes all packed copies may hold together: a quarter of the machine's memory (1 GiB where the
    machine does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError, AttributeError):
        return 2**30


def _product(x: Float[torch.Tensor, "*batch d_in"], packed: torch.Tensor,
             bias: torch.Tensor | None) -> Float[torch.Tensor, "*batch d_out"]:
    """``x @ W.T + bias`` with ``packed`` = ``W`` in oneDNN's layout."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


def _sample(w: torch.Tensor) -> torch.Tensor:
    """A strided view of ``w``'s values, about one per row, each row at another column."""
    return w.detach().view(-1)[:: w.shape[1] + 1]


class _Packs:
    """A layer's packed copies, by weight storage: ``(version, sample, packed)``; freed with the layer. A copy of
    the layer (``copy.deepcopy``, pickling) starts with none."""

    def __init__(self) -> None:
        self.entries: dict[int, tuple[int, torch.Tensor, torch.Tensor]] = {}
        self.nbytes: dict[int, int] = {}

    def get(self, w: torch.Tensor) -> torch.Tensor | None:
        """The packed copy of ``w`` as it is now (made if needed); None past the budget."""
        key = w.data_ptr()
        entry = self.entries.get(key)
        if entry is not None and entry[0] == w._version and torch.equal(entry[1], _sample(w)):
            self.entries[key] = self.entries.pop(key)  # most recently used last
            return entry[2]
        self._drop(key)
        while len(self.entries) >= KEEP:
            self._drop(next(iter(self.entries)))
        size = w.numel() * w.element_size()
        if _held[0] + size > budget_bytes():
            return None
        packed = torch.ops.mkldnn._reorder_linear_weight(w.detach(), None)
        self.entries[key], self.nbytes[key] = (w._version, _sample(w).clone(), packed), size
        _held[0] += size
        return packed

    def _drop(self, key: int) -> None:
        if self.entries.pop(key, None) is not None:
            _held[0] -= self.nbytes.pop(key)

    def __del__(self) -> None:
        if _held is not None:  # None at interpreter exit
            for key in list(self.entries):
                self._drop(key)

    def __deepcopy__(self, memo: dict) -> _Packs:
        return _Packs()

    def __reduce__(self):
        return _Packs, ()


class PackedLinear(torch.nn.Linear):
    """An ``nn.Linear`` whose forward takes the packed kernel where it applies (see the module docstring);
    ``use_packed_linears`` turns a model's plain ones into these in place (same parameters, same state dict)."""

    def forward(self, x: Float[torch.Tensor, "*batch d_in"]) -> Float[torch.Tensor, "*batch d_out"]:
        """``x @ weight.T + bias``."""
        w = self.weight
        if (w.device.type == "cpu" and w.dtype == torch.float32 and x.dtype == torch.float32
                and x.device.type == "cpu" and w.is_contiguous()
                and not (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad))):
            packs = self.__dict__.get("_alignloc_packs")
            if packs is None:
                packs = self._alignloc_packs = _Packs()
            packed = packs.get(w)
            if packed is not None:
                return _product(x, packed, self.bias)
        return F.linear(x, w, self.bias)


def use_packed_linears(model: torch.nn.Module) -> int:
    """Make ``model``'s plain ``nn.Linear`` layers of at least ``MIN_WEIGHT`` values on the CPU ``PackedLinear``
    (see the module docstring); the number of ``PackedLinear`` layers it has then (0 where the kernel is not
    available, the model is sharded by accelerate, or none qualifies). Calling it again changes nothing."""
    if not available() or getattr(model, "hf_device_map", None):
        return 0
    n = 0
    for module in model.modules():
        w = getattr(module, "weight", None)
        if (type(module) is torch.nn.Linear and w is not None and w.device.type == "cpu" and w.dtype == torch.float32
                and w.numel() >= MIN_WEIGHT):
            module.__class__ = PackedLinear
        n += type(module) is PackedLinear
    return n
