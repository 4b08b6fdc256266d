"""Options shared by the commands that load models: where they run, in what precision, how many at once."""

from __future__ import annotations

import typer

from alignloc.progress import QUIET_HELP

DEVICE = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N | mps (auto: the GPU if one is visible, else cpu).")
COMPUTE_DTYPE = typer.Option("auto", "--compute-dtype", help="auto | float32 | bfloat16 | float16: weights and forward "
                             "passes (auto: bfloat16 on a GPU, float32 on cpu).")
DEVICE_MAP = typer.Option("none", "--device-map", help="none | auto | balanced | sequential: shard each model over the "
                          "visible GPUs (then CPU) with accelerate (leave --device at auto).")
ONE_AT_A_TIME = typer.Option(False, help="Hold one model in memory at a time (each is loaded again when its turn "
                             "comes): about half the peak memory, at the cost of reloading (layer-diff --causal needs both).")
SUITE = typer.Option(None, "--suite", help="Without --prompts (and not zoo:NAME): built-in prompt suites to run, a comma "
                     "list of chat, knowledge, generic (default chat,knowledge; `alignloc suites` lists them).")
CHAT_TEMPLATE = typer.Option("auto", "--chat-template", help="How chat prompts become text, the same for both models: "
                             "auto (the tuned tokenizer's template, else the base's, else none) | tuned | base | none "
                             "('User: ...' / 'Assistant:' lines) | PATH of a Jinja template.")
QUIET = typer.Option(False, "--quiet", help=QUIET_HELP)
OVERWRITE_HELP = ("Write into an OUT folder that holds other files (they are never replaced), and replace alignloc's own "
                  "earlier outputs.")
ALLOW_PICKLE = typer.Option(False, "--allow-pickle", help="Allow pickle (.bin) checkpoints. Only for sources you trust.")
TRUST_REMOTE_CODE = typer.Option(False, "--trust-remote-code", help="Run model code shipped with a hub checkpoint.")
