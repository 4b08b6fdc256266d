"""``LoadOptions``: how a model is loaded, as one value instead of seven keywords repeated by every caller.

``load_model``, ``load_pair`` and every experiment that loads models take the same keywords (where the
weights go, in which dtype, whether a pickle or remote code may run, which attention kernel). The command
line builds one ``LoadOptions`` from its shared options (``cli.options.load_options``) and hands it down;
library callers may still pass the keywords (``load_pair("zoo:NAME", device="cpu")``), which build one.
Nothing here imports torch (the command line's ``--help`` reads it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LoadOptions:
    """Where and how models are loaded; the same for every model of a run.

    ``device``: auto | cpu | cuda | cuda:N | mps; ``compute_dtype``: auto | float32 | bfloat16 | float16 (or a
    torch dtype; auto: bf16 on a GPU, fp32 on cpu); ``device_map``: an accelerate map (auto, balanced,
    sequential, or ``{module: device}``) that shards each model, ``offload_folder`` for its disk part;
    ``allow_pickle``: read ``.bin`` checkpoints (through torch's weights-only unpickler);
    ``trust_remote_code``: run model code shipped with a hub checkpoint; ``attn_implementation``: the
    transformers attention kernel (None: eager on CPU, the library's default elsewhere).
    """

    device: str = "auto"
    compute_dtype: Any = "auto"  # str, or a torch.dtype
    device_map: str | dict | None = None
    offload_folder: str | None = None
    allow_pickle: bool = False
    trust_remote_code: bool = False
    attn_implementation: str | None = None

    def __post_init__(self) -> None:
        if self.device_map in ("none", ""):  # the command line's spelling of "no map"
            object.__setattr__(self, "device_map", None)

    @classmethod
    def build(cls, options: LoadOptions | None = None, **keywords: Any) -> LoadOptions:
        """``options`` (default: the defaults) with ``keywords`` replacing its fields; a TypeError naming an
        unknown keyword (the fields are the only load keywords)."""
        unknown = sorted(set(keywords) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise TypeError(f"unknown load option(s) {', '.join(unknown)}; LoadOptions has "
                            f"{', '.join(f.name for f in dataclasses.fields(cls))}")
        if options is not None and not isinstance(options, LoadOptions):
            raise TypeError(f"options must be a LoadOptions, got {type(options).__name__}")
        return dataclasses.replace(options or cls(), **keywords)

    def replace(self, **changes: Any) -> LoadOptions:
        """A copy with ``changes`` (e.g. ``opts.replace(allow_pickle=False)`` for a zoo model)."""
        return LoadOptions.build(self, **changes)

    def placement(self) -> dict:
        """The placement keywords (``device``, ``compute_dtype``, ``device_map``, ``offload_folder``) of
        ``models.placement.resolve_placement``."""
        return {"device": self.device, "compute_dtype": self.compute_dtype, "device_map": self.device_map,
                "offload_folder": self.offload_folder}
