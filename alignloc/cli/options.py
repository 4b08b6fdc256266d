"""Every option that more than one command takes, defined once: the command line speaks one dialect.

An option repeated across commands (``--out``, ``--overwrite``, ``--n-boot``, ``--seed``, ``--quiet``, ``--size``,
``--device``/``--compute-dtype``/``--device-map``, ...) is written here, with one name, one default and one help
text; a command whose option must differ (the default folder of ``--out``, what ``--overwrite`` replaces) says so
through the factory's arguments. Nothing here imports torch: ``--help`` is answered from these definitions alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from alignloc.progress import QUIET_HELP

# ---- where models run ------------------------------------------------------------------------------------------

DEVICE = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N | mps (auto: the GPU if one is visible, else cpu).")
COMPUTE_DTYPE = typer.Option("auto", "--compute-dtype", help="auto | float32 | bfloat16 | float16: weights and forward "
                             "passes (auto: bfloat16 on a GPU, float32 on cpu).")
DEVICE_MAP = typer.Option("none", "--device-map", help="none | auto | balanced | sequential: shard each model over the "
                          "visible GPUs (then CPU) with accelerate (leave --device at auto).")
ONE_AT_A_TIME = typer.Option(False, help="Hold one model in memory at a time (each is loaded again when its turn "
                             "comes): about half the peak memory, at the cost of reloading (layer-diff --causal needs both).")
ALLOW_PICKLE = typer.Option(False, "--allow-pickle", help="Allow pickle (.bin) checkpoints. Only for sources you trust.")
TRUST_REMOTE_CODE = typer.Option(False, "--trust-remote-code", help="Run model code shipped with a hub checkpoint.")

# ---- prompts ---------------------------------------------------------------------------------------------------

SUITE = typer.Option(None, "--suite", help="Without --prompts (and not zoo:NAME): built-in prompt suites to run, a comma "
                     "list of chat, knowledge, generic (default chat,knowledge; `alignloc suites` lists them).")
CHAT_TEMPLATE = typer.Option("auto", "--chat-template", help="How chat prompts become text, the same for both models: "
                             "auto (the tuned tokenizer's template, else the base's, else none) | tuned | base | none "
                             "('User: ...' / 'Assistant:' lines) | PATH of a Jinja template.")

PROMPTS_HELP = "JSONL prompt file (see docs/guide.md)."


def prompts_option(help: str = PROMPTS_HELP + " Default: an organism's bundled prompts for zoo:NAME, else the built-in "
                   "suites (--suite).") -> Any:
    """``--prompts FILE`` (``-p``); what it defaults to differs by command, so its help may too."""
    return typer.Option(None, "--prompts", "-p", help=help)


ANSWER_TOKENS = typer.Option(16, "--answer-tokens", help="Chat prompts without a target: the tuned model's greedy answer "
                             "(trajectory: the last stage's), at most this many tokens (stopped at end of turn), is the "
                             "target; the base's the foil.")
BATCH_SIZE = typer.Option(16, "--batch-size", help="Prompts per forward pass (peak memory scales with it).")
BACKEND = typer.Option("hf", "--backend", help="hf (forward hooks, fastest) | bridge (TransformerLens v4) | nnsight: "
                       "the same activations.")

# ---- statistics ------------------------------------------------------------------------------------------------

N_BOOT_DEFAULT = 1000  # every command's --n-boot (and the library's layer_diff): one default, one meaning
N_BOOT = typer.Option(N_BOOT_DEFAULT, "--n-boot", help="Bootstrap resamples over prompts for every interval.")
SEED = typer.Option(0, "--seed", help="Seed for bootstrap, folds and control tasks.")

# ---- output ----------------------------------------------------------------------------------------------------

QUIET = typer.Option(False, "--quiet", help=QUIET_HELP)
OVERWRITE_HELP = ("Write into an OUT folder that holds other files (they are never replaced), and replace alignloc's own "
                  "earlier outputs.")
JSON_HELP = "Print the result as JSON on stdout (instead of the text)."


def out_option(default: Path | None, help: str) -> Any:
    """``--out DIR`` (``-o``): the folder a command writes into; ``default`` None makes it required."""
    return typer.Option(... if default is None else default, "--out", "-o", help=help)


def overwrite_option(help: str = OVERWRITE_HELP) -> Any:
    """``--overwrite``: the one flag that lets a command replace what it wrote before (there is no ``--force``)."""
    return typer.Option(False, "--overwrite", help=help)


def json_option(help: str = JSON_HELP) -> Any:
    """``--json``: print the command's result as JSON on stdout; it never names a file (files go to ``--out``)."""
    return typer.Option(False, "--json", help=help)


# ---- the zoo ---------------------------------------------------------------------------------------------------



def size_option(help: str) -> Any:
    """``--size``: which zoo size a command builds or reuses (default tiny)."""
    return typer.Option("tiny", "--size", help=help)


# ---- how models are loaded -------------------------------------------------------------------------------------


def load_options(device: str = "auto", compute_dtype: str = "auto", device_map: str | None = "none",
                 allow_pickle: bool = False, trust_remote_code: bool = False):
    """One ``LoadOptions`` from a command's shared options (``--device``, ``--compute-dtype``, ``--device-map``,
    ``--allow-pickle``, ``--trust-remote-code``), the placement checked against this machine first (cuda
    without a GPU is refused here, before anything is loaded); every model the command loads gets it."""
    from alignloc import options as check
    from alignloc.models.load_options import LoadOptions

    return LoadOptions(**check.placement(device, compute_dtype, device_map), allow_pickle=allow_pickle,
                       trust_remote_code=trust_remote_code)
