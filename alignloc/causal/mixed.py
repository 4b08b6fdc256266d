"""Several layer masks over a pair's delta in one forward: each row of a stacked batch runs its own mix of blocks.

The learned delta mask (``causal.mask``, reinforce) scores a few sampled binary masks per step on the
same prompts; each mask takes some whole layers (and the head: final norm and unembedding) from the
tuned model and the rest from the base. ``mixed_logits`` stacks one copy of the prompt batch per mask
into one forward of the base model in which every block from the lowest grafted one up is a ``RowMix``:

- rows whose mask changes nothing at or below block ``l`` take the base's recorded residual after it
  (no compute: what a forward resumed at the mask's first grafted block skips, ``causal.resumed``);
- the other rows run the base's or the tuned model's block ``l``, one call for each side on its rows.

So each row computes the blocks its own resumed forward computes, in one call per block and side
instead of one forward per mask (per group of prompts of similar length, ``metrics.in_length_groups``, with
the larger fixed cost per call of a stacked forward, ``MIXED_OVERHEAD``), and the final norm and unembedding (the
scored positions only, ``hooks.unembed_at``) follow each row's head bit. A mask that grafts the embedding is not stacked
(the caller runs it alone). ``stacks_exactly`` checks the stacked logits against one forward per mask.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch
from jaxtyping import Bool, Float, Int

from alignloc.causal.metrics import in_length_groups
from alignloc.models.families import Family, get_module
from alignloc.models.hooks import unembed_at
from alignloc.models.resume import Prefix, resume

# a stacked forward's fixed cost per call, in row-positions of ``metrics.pack``: each block runs as up to two
# calls (one per side) that gather and scatter their rows, several times a plain forward's (32). Measured on the
# mask's batches of 16 prompts (7-19 tokens), 15 steps: the Gemma-3-270M config 8% faster as one group than as the
# two a plain forward's cost makes, the SmolLM2-135M config the same either way
MIXED_OVERHEAD = 128.0


def _rows(obj, idx: Int[torch.Tensor, " m"], n: int):
    """``obj`` (a block's argument: tensors, tuples, dicts of them) restricted to rows ``idx`` of a batch of ``n``."""
    if isinstance(obj, torch.Tensor):
        return obj[idx.to(obj.device)] if obj.dim() > 0 and obj.shape[0] == n else obj
    if isinstance(obj, (tuple, list)):
        return type(obj)(_rows(o, idx, n) for o in obj)
    if isinstance(obj, dict):
        return {k: _rows(v, idx, n) for k, v in obj.items()}
    return obj


class RowMix(torch.nn.Module):
    """Stands in for a block (or the final norm) of the base: row ``r`` runs the base's module where
    ``tuned[r]`` is False, the tuned model's where it is True, and takes ``idle_out[r]`` (the recorded
    residual after the block) where ``idle[r]`` is True."""

    def __init__(self, base: torch.nn.Module, tuned: torch.nn.Module, use_tuned: Bool[torch.Tensor, " n"],
                 idle: Bool[torch.Tensor, " n"] | None = None, idle_out: torch.Tensor | None = None):
        super().__init__()
        self.sides = (base, tuned)  # a tuple: not registered as submodules of the model
        self.use_tuned, self.idle, self.idle_out = use_tuned, idle, idle_out
        self.attention_type = getattr(base, "attention_type", None)  # read by some families' loops

    def forward(self, hidden_states, *args, **kwargs):
        n = hidden_states.shape[0]
        idle = torch.zeros(n, dtype=torch.bool) if self.idle is None else self.idle
        groups = [(side, sel) for side, sel in zip(self.sides, (~idle & ~self.use_tuned, ~idle & self.use_tuned),
                                                   strict=True) if sel.any()]
        if len(groups) == 1 and bool(groups[0][1].all()):  # one side for every row: the module as it is
            return groups[0][0](hidden_states, *args, **kwargs)
        out = torch.empty_like(hidden_states)
        if idle.any():
            out[idle.to(out.device)] = self.idle_out[idle.to(self.idle_out.device)].to(out.dtype)
        for side, sel in groups:
            idx = sel.nonzero().squeeze(1)
            res = side(*_rows((hidden_states, *args), idx, n), **_rows(kwargs, idx, n))
            out[idx.to(out.device)] = res[0] if isinstance(res, tuple) else res
        return out


class HeadMix(torch.nn.Module):
    """Stands in for the unembedding inside ``hooks.unembed_at`` (which hands it the kept columns of every
    row as one ``[1, n kept, d_model]`` sequence): each column is unembedded by its row's side."""

    def __init__(self, base: torch.nn.Module, tuned: torch.nn.Module, use_tuned: Bool[torch.Tensor, " n"],
                 index: Int[torch.Tensor, "n k"]):
        super().__init__()
        self.sides = (base, tuned)
        keep = torch.ones_like(index, dtype=torch.bool)
        keep[:, 1:] = index[:, 1:] != index[:, :-1]
        self.column_tuned = use_tuned[:, None].expand_as(index)[keep]  # [n kept], as unembed_at keeps them

    def forward(self, h: Float[torch.Tensor, "1 kept d_model"]) -> Float[torch.Tensor, "1 kept d_vocab"]:
        parts = [(side, sel) for side, sel in zip(self.sides, (~self.column_tuned, self.column_tuned), strict=True)
                 if sel.any()]
        if len(parts) == 1:
            return parts[0][0](h)
        outs = [side(h[:, sel.to(h.device)]) for side, sel in parts]
        out = outs[0].new_empty(1, h.shape[1], outs[0].shape[-1])
        for (_, sel), o in zip(parts, outs, strict=True):
            out[:, sel.to(out.device)] = o
        return out


def _set(root: torch.nn.Module, path: str, module: torch.nn.Module) -> None:
    """Put ``module`` at the dotted ``path`` of ``root`` (numeric parts index ModuleLists)."""
    parent, _, last = path.rpartition(".")
    owner = get_module(root, parent)
    if last.isdigit():
        owner[int(last)] = module
    else:
        setattr(owner, last, module)


@contextmanager
def _installed(model: torch.nn.Module, modules: dict[str, torch.nn.Module]) -> Iterator[None]:
    """Within the block, ``modules`` (dotted path -> module) replace those of ``model``; restored on exit."""
    originals = {path: get_module(model, path) for path in modules}
    with ExitStack() as stack:
        for path, module in modules.items():
            stack.callback(_set, model, path, originals[path])
            _set(model, path, module)
        yield


def first_changed(blocks: Bool[torch.Tensor, "s n_layers"]) -> Int[torch.Tensor, " s"]:
    """Per mask, the first grafted block (the last block where none is grafted: a cheap resume)."""
    n = blocks.shape[1]
    any_on = blocks.any(1)
    first = blocks.float().argmax(1)
    return torch.where(any_on, first, torch.full_like(first, n - 1))


@torch.no_grad()
def mixed_logits(base: torch.nn.Module, tuned: torch.nn.Module, family: Family, prefix: Prefix,
                 ids: Int[torch.Tensor, "b pos"], index: Int[torch.Tensor, "b k"],
                 blocks: Bool[torch.Tensor, "s n_layers"], head: Bool[torch.Tensor, " s"],
                 unembed_tuned: Bool[torch.Tensor, " s"]) -> Float[torch.Tensor, "s b k d_vocab"]:
    """Logits at ``index`` of ``s`` masks on one batch: mask ``j`` takes block ``l`` from ``tuned`` where
    ``blocks[j, l]``, the final norm where ``head[j]`` and the unembedding where ``unembed_tuned[j]`` (the head
    unit, or the embedding's when the two are tied), from ``base`` otherwise; the embedding is the base's.
    ``prefix``: the base's recorded run of the batch (``models.resume.record_prefix``, every block's input)."""
    s, n_layers = blocks.shape
    start = first_changed(blocks)  # [s]
    low = int(start.min())
    base_blocks, tuned_blocks = get_module(base, family.layers), get_module(tuned, family.layers)

    def run(group: Int[torch.Tensor, " m"], width: int) -> Float[torch.Tensor, "m s k d_vocab"]:
        """The masks on the batch rows ``group``, their first ``width`` positions."""
        m = len(group)
        rows = group.repeat(s)  # [s * m]: mask j's copy of the group is rows j*m .. j*m+m-1
        per_row = lambda t: t.repeat_interleave(m)  # noqa: E731  [s] -> [s * m]
        swap: dict[str, torch.nn.Module] = {}
        for layer in range(low, n_layers):
            idle = per_row(start > layer)
            after = prefix.resid[layer + 1][rows, :width] if bool(idle.any()) else None  # idle rows: the base's own
            swap[f"{family.layers}.{layer}"] = RowMix(base_blocks[layer], tuned_blocks[layer], per_row(blocks[:, layer]),
                                                      idle, after)
        if bool(head.any()):
            swap[family.final_norm] = RowMix(get_module(base, family.final_norm), get_module(tuned, family.final_norm),
                                             per_row(head))
        idx = index[group].repeat(s, 1)
        if bool(unembed_tuned.any()):
            swap[family.unembed] = HeadMix(get_module(base, family.unembed), get_module(tuned, family.unembed),
                                           per_row(unembed_tuned), idx)
        zeros = torch.zeros_like(rows)
        with _installed(base, swap), unembed_at(base, family, idx):
            logits = resume(base, family, prefix, low, rows, zeros, prefix.resid[low][rows, :width], ids)
        return logits.float().cpu().view(s, m, *logits.shape[1:]).transpose(0, 1)

    row_end = index.max(dim=1).values + 1  # [b]: the columns a metric reads
    # rows of similar length together (less padding), split less readily than a plain forward's
    return in_length_groups(row_end, run, overhead=MIXED_OVERHEAD).transpose(0, 1)
