"""The ``alignloc`` command line: a thin typed shell over the library. ``main(argv)`` is testable."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import typer

import alignloc.zoo  # noqa: F401 (light: registers the zoo, so that every command takes zoo:NAME references)
from alignloc import options as check
from alignloc import progress
from alignloc.cli.errors import run, watch
from alignloc.cli.options import (
    ALLOW_PICKLE,
    ANSWER_TOKENS,
    BACKEND,
    BATCH_SIZE,
    CHAT_TEMPLATE,
    COMPUTE_DTYPE,
    DEVICE,
    DEVICE_MAP,
    N_BOOT,
    ONE_AT_A_TIME,
    PROMPTS_HELP,
    QUIET,
    SEED,
    SUITE,
    TRUST_REMOTE_CODE,
    load_options,
    out_option,
    overwrite_option,
    prompts_option,
    size_option,
)
from alignloc.errors import UsageError

app = typer.Typer(
    name="alignloc",
    help="Where inside a network does post-training land, and what kind of change is it?",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _quiet_libraries() -> None:
    """Errors only from transformers, and no library progress bars (alignloc draws its own); through the
    environment when transformers is not imported yet, so that ``--help`` imports neither it nor torch."""
    if not sys.stderr.isatty():
        os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' bars follow the hub's setting
    logging.getLogger("transformers").setLevel(logging.ERROR)
    if "transformers" in sys.modules:  # imported earlier (a caller's main() in-process): set it directly
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()


@app.command()
def capture(
    base: str = typer.Argument(..., help="Base model: local HF directory, hub id, or zoo:NAME[@SIZE]."),
    tuned: str | None = typer.Argument(None, help="Post-trained model (directory, hub id, peft adapter dir). Omit with zoo:NAME."),
    prompts: Path | None = prompts_option(),
    out: Path = out_option(None, "Store directory to create, reuse or resume."),
    suite: str | None = SUITE, chat_template: str = CHAT_TEMPLATE,
    sites: str = typer.Option("resid_post", help="Comma list of resid_pre|resid_mid|resid_post|attn_out|mlp_out[.LAYER]."),
    layers: str | None = typer.Option(None, help="Layers for sites without .LAYER: '*', '0,2', '1-3', '-1'."),
    positions: str = typer.Option("last", help="last | all | an integer index | a named position from the prompts."),
    batch_size: int = BATCH_SIZE,
    dtype: str = typer.Option("float32", help="Storage dtype: float32 | float16 | bfloat16."),
    backend: str = BACKEND,
    overwrite: bool = overwrite_option("Replace a store that holds a different capture; write into a folder "
                                       "that holds other files (they are never replaced)."),
    device: str = DEVICE, compute_dtype: str = COMPUTE_DTYPE, device_map: str = DEVICE_MAP,
    one_at_a_time: bool = ONE_AT_A_TIME,
    allow_pickle: bool = ALLOW_PICKLE,
    trust_remote_code: bool = TRUST_REMOTE_CODE,
    quiet: bool = QUIET,
) -> None:
    """Capture activations of a base/tuned pair on the same prompts into an on-disk store."""
    progress.configure("quiet" if quiet else "auto")
    from alignloc.capturing import capture as run_capture
    from alignloc.models.backends import BACKENDS
    from alignloc.models.pair import load_pair
    from alignloc.store.schema import DTYPE_NAMES
    from alignloc.store.writer import check_store_dir
    from alignloc.suites.prepare import choose_prompts

    check.at_least("--batch-size", batch_size)
    check.one_of("--dtype", dtype, DTYPE_NAMES)
    check.one_of("--backend", backend, BACKENDS)
    opts = load_options(device, compute_dtype, device_map, allow_pickle, trust_remote_code)
    n_layers = check.model_refs(base, tuned, allow_pickle=allow_pickle)
    check.sites(sites, layers, n_layers)
    chosen = choose_prompts(base, tuned, prompts, suite, chat_template, allow_pickle=allow_pickle,
                            trust_remote_code=trust_remote_code)
    prompt_list = chosen.prompts
    check.positions(positions, prompt_list)
    check_store_dir(out, overwrite, "--out")
    for line in chosen.describe() if chosen.chosen else []:
        typer.echo(line, err=True)
    watch(out)
    pair = load_pair(base, tuned, opts, one_at_a_time=one_at_a_time)
    store = run_capture(pair, prompt_list, out, sites=sites, positions=positions, layers=layers, batch_size=batch_size,
                        dtype=dtype, backend=backend, overwrite=overwrite, release=one_at_a_time)
    typer.echo(store.summary())


@app.command()
def info(
    store: Path = typer.Argument(..., help="A store directory written by `alignloc capture`."),
    verify: bool = typer.Option(False, help="Checksum every shard now (otherwise shards are checked when read)."),
) -> None:
    """Describe an activation store (models, sites, positions, size); optionally verify it."""
    from alignloc.store import open_store

    st = open_store(store)
    typer.echo(st.summary())
    if verify:
        typer.echo(f"verified: {st.verify_all()} shards, all checksums match")


@app.command()
def demo(
    organism: str | None = typer.Option(None, help="Organism name (default: the zoo's default, chat-sft-upper)."),
    out: Path = out_option(Path("alignloc-demo"), "Where the demo writes its store and report."),
    size: str = size_option("Zoo size: tiny (CPU minutes) | small."),
    device: str = DEVICE, compute_dtype: str = COMPUTE_DTYPE, device_map: str = DEVICE_MAP,
    overwrite: bool = overwrite_option(),
    quiet: bool = QUIET,
) -> None:
    """Build (or reuse) the default organism and run layer-diff on it: where is the change, of what kind?"""
    progress.configure("quiet" if quiet else "auto")
    from alignloc import zoo
    from alignloc.experiments.layerdiff import default_control, layer_diff
    from alignloc.models.pair import load_pair
    from alignloc.report import REPORT_FILES
    from alignloc.store.outputs import check_out_dir

    name = organism or zoo.DEFAULT_ORGANISM
    zoo.check_name(name, size)
    opts = load_options(device, compute_dtype, device_map)
    if name in zoo.BASES:
        raise UsageError(f"--organism: {name} is a base model, not an organism (e.g. {zoo.DEFAULT_ORGANISM})")
    check_out_dir(out, (*REPORT_FILES, "acts", "acts-control", "acts-demos"), overwrite=overwrite)
    watch(out / "acts")
    watch(out / "acts-control")
    typer.echo(f"[1/3] organism {name} ({size}): building or reusing under {zoo.zoo_root()}", err=True)
    entry = zoo.resolve(name, size=size)
    pair = load_pair(str(entry.base), str(entry.tuned), opts)
    pair.name, pair.ground_truth = name, entry.ground_truth
    typer.echo(f"[2/3] layer-diff: capture -> {out / 'acts'}, weights, shift, lens, probes, verdict", err=True)
    report = layer_diff(pair, zoo.organism_prompts(name, size), out, control=default_control(pair, size, opts), overwrite=overwrite)
    sh, w = report["measures"]["shift"], report["measures"]["weights"]["layers"]
    typer.echo(f"[3/3] base -> tuned, per layer (planted layers: {entry.ground_truth.get('layers')})")
    typer.echo("layer  weights  rel.L2   1-cos    CKA")
    for layer in range(pair.n_layers):
        rel = sh["relative_l2"]["mean"][layer]
        typer.echo(f"{layer:>5}  {w[layer]['relative_frobenius']:.4f}   {rel:.4f}   {sh['one_minus_cos']['mean'][layer]:.4f}"
                   f"   {sh['cka']['mean'][layer]:.3f}  " + "#" * round(40 * min(1.0, rel)))
    for line in report["verdict"]["summary"]:
        typer.echo(f"- {line}")
    typer.echo(f"report: {out / 'index.html'}")


@app.command("layer-diff")
def layer_diff_cmd(
    base: str = typer.Argument(..., help="Base model: local HF directory, hub id, or zoo:NAME[@SIZE] (then omit TUNED)."),
    tuned: str | None = typer.Argument(None, help="Post-trained model (directory, hub id, peft adapter dir)."),
    prompts: Path | None = prompts_option(),
    out: Path = out_option(Path("layer-diff-report"), "Report directory (index.html, report.json, summary.md)."),
    suite: str | None = SUITE, chat_template: str = CHAT_TEMPLATE,
    answer_tokens: int = ANSWER_TOKENS,
    control: str | None = typer.Option(None, help="Control checkpoint on the same base, ideally the tuned model's training "
                                       "without the edit: it sets the noise floors, and --causal also localizes the gap against "
                                       "it; 'none' to disable. Default: the zoo's control for zoo:NAME, else none."),
    store: Path | None = typer.Option(None, help="Activation store to create or reuse (default OUT/acts)."),
    n_boot: int = N_BOOT,
    seed: int = SEED,
    probes: bool = typer.Option(True, help="Train per-layer linear probes (--no-probes to skip)."),
    causal: bool = typer.Option(False, help="Also run the causal tests: graft windows, a learned delta mask, cross-/within-model "
                                "patching with layer x position grids, attribution; the verdict then names layers from them."),
    budget: str = typer.Option("standard", help="With --causal: quick (windows 1,2, no mask, 32 prompts per kind) | standard "
                               "(windows 1, 2, 4, ... up to half the layers, a 100-step mask, 64 prompts; the sweeps the "
                               "verdict does not read triaged, the profile's sets up to half the layers) | thorough (every "
                               "window size up to half, each both ways, 300 steps, 128 prompts, every cell and set); its plan "
                               "and estimate print first."),
    windows: str | None = typer.Option(None, help="With --causal: graft window sizes, e.g. '1,2,4' (default: the budget's)."),
    mask_steps: int | None = typer.Option(None, help="With --causal: steps of the learned delta mask, 0 skips it (default: "
                                          "the budget's)."),
    batch_size: int = BATCH_SIZE,
    backend: str = BACKEND,
    device: str = DEVICE, compute_dtype: str = COMPUTE_DTYPE, device_map: str = DEVICE_MAP,
    overwrite: bool = overwrite_option("Replace a store that holds a different capture; write into an OUT folder "
                                       "that holds other files (they are never replaced)."),
    one_at_a_time: bool = ONE_AT_A_TIME,
    allow_pickle: bool = ALLOW_PICKLE,
    trust_remote_code: bool = TRUST_REMOTE_CODE,
    quiet: bool = QUIET,
) -> None:
    """Compare base and tuned layer by layer: where is the change, and is it knowledge or behavior?"""
    progress.configure("quiet" if quiet else "auto")
    from alignloc.causal.budget import BUDGETS
    from alignloc.experiments.layerdiff import default_control, layer_diff
    from alignloc.layerdiff.answers import ANSWERS_FILE, answer_targets
    from alignloc.layerdiff.config import LayerDiffConfig
    from alignloc.models.backends import BACKENDS
    from alignloc.models.pair import load_model, load_pair
    from alignloc.report import REPORT_FILES
    from alignloc.report.answers import refusal_lines
    from alignloc.report.causal import skip_warnings
    from alignloc.store.outputs import check_out_dir
    from alignloc.store.writer import check_store_dir
    from alignloc.suites.prepare import choose_prompts

    check.at_least("--n-boot", n_boot)
    check.at_least("--answer-tokens", answer_tokens)
    check.seed(seed)
    check.at_least("--batch-size", batch_size)
    check.one_of("--backend", backend, BACKENDS)
    if mask_steps is not None:
        check.at_least("--mask-steps", mask_steps, 0)
    check.one_of("--budget", budget, tuple(BUDGETS))
    opts = load_options(device, compute_dtype, device_map, allow_pickle, trust_remote_code)
    check.windows(windows, check.model_ref(base, allow_pickle))
    no_control = control is not None and control.lower() == "none"
    check.model_refs(base, tuned, None if control is None or no_control else control, allow_pickle=allow_pickle)
    chosen = choose_prompts(base, tuned, prompts, suite, chat_template, allow_pickle=allow_pickle,
                            trust_remote_code=trust_remote_code, reserve=answer_tokens)
    check_out_dir(out, (*REPORT_FILES, "acts", "acts-control", "acts-demos", ANSWERS_FILE), overwrite=overwrite)
    if store is not None:
        check_store_dir(store, overwrite, "--store")
    chats = chosen.chats
    say = lambda m: typer.echo(m, err=True)  # noqa: E731
    for line in chosen.describe() if chosen.chosen else []:
        say(line)
    if chats:
        say(f"targets: the tuned model's greedy answer (at most {answer_tokens} tokens, --answer-tokens) to each of "
            f"{len(chats)} chat prompts, the base model's as foil; kept in {out / ANSWERS_FILE}")
    watch(store or out / "acts")
    watch(out / "acts-control")
    pair = load_pair(base, tuned, opts, one_at_a_time=one_at_a_time and not causal)
    prompt_list, answers = chosen.prompts, None
    if chats:
        prompt_list, answers = answer_targets(pair, prompt_list, out, answer_tokens=answer_tokens,
                                              template=chosen.template.record(), bos=chosen.bos,
                                              batch_size=batch_size, log=say,
                                              one_at_a_time=one_at_a_time and not causal)
    if one_at_a_time and not causal and not no_control:
        pair.tuned.release()  # before a control model is loaded
    if control is None:
        ctrl = default_control(pair, options=opts)
    elif no_control:
        ctrl = None
    else:
        ctrl = load_model(control, opts)
        ctrl.meta["twin"] = True  # named by the user as the training without the edit: --causal localizes against it
    config = LayerDiffConfig(n_boot=n_boot, seed=seed, probes=probes, batch_size=batch_size, backend=backend,
                             causal=causal, windows=check.windows(windows, pair.n_layers), mask_steps=mask_steps,
                             budget=budget, one_at_a_time=one_at_a_time and not causal)
    report = layer_diff(pair, prompt_list, out, config, control=ctrl, store=store, overwrite=overwrite, answers=answers)
    for line in skip_warnings(report, out / "index.html"):
        typer.echo(line, err=True)
    for line in report["verdict"]["summary"] + (refusal_lines(answers) if answers else []):
        typer.echo(f"- {line}")
    typer.echo(f"report: {out / 'index.html'}  {out / 'report.json'}  {out / 'summary.md'}")


@app.command("suites")
def suites_cmd() -> None:
    """List the built-in prompt suites (layer-diff and capture run them when no --prompts is given)."""
    from alignloc.suites import list_suites

    for s in list_suites():
        counts = f" ({len(s['counts'])} {'categories' if s['name'] == 'chat' else 'relations'})" if s["counts"] else ""
        typer.echo(f"{s['name']:<10} {s['size']:>4} prompts{counts}: {s['description']}")


def _mount_subcommands() -> None:
    from alignloc.cli.experiments import COMMANDS
    from alignloc.cli.rlformats import rl_formats_cmd

    for name, fn in COMMANDS.items():
        app.command(name)(fn)

    app.command("rl-formats")(rl_formats_cmd)
    try:
        from alignloc.cli.zoo import zoo_app
    except ImportError:  # the zoo is optional until it is built
        return
    app.add_typer(zoo_app, name="zoo", help="Model organisms: build and list base/post-trained pairs with ground truth.")


_mount_subcommands()


@app.command("trajectory")
def trajectory_cmd(
    checkpoints: list[str] = typer.Argument(..., metavar="CKPT", help="Checkpoints in training order, CKPT0 (the base) CKPT1 ... CKPTn: each "
                                            "a local HF directory, hub id, zoo:NAME[@SIZE][:base|tuned] or peft adapter dir "
                                            "(merged onto CKPT0)."),
    prompts: Path | None = prompts_option(PROMPTS_HELP + " Default when a checkpoint is zoo:NAME: the last such "
                                          "organism's bundled prompts; otherwise the built-in suites (--suite), with the "
                                          "last stage's own answers as targets."),
    suite: str | None = SUITE, chat_template: str = CHAT_TEMPLATE,
    answer_tokens: int = ANSWER_TOKENS,
    out: Path = out_option(Path("trajectory-report"), "Folder for step-k/ and base-k/ reports, trajectory.json and "
                           "trajectory.html (and trajectory.png when kaleido can draw it)."),
    n_boot: int = N_BOOT,
    seed: int = SEED,
    probes: bool = typer.Option(False, help="Also train per-layer linear probes in every report (off by default, unlike "
                                "layer-diff: a trajectory writes two reports per stage)."),
    what_changed: bool = typer.Option(True, help="The activation-difference lens in every report (--no-what-changed to skip)."),
    batch_size: int = BATCH_SIZE,
    backend: str = BACKEND,
    device: str = DEVICE, compute_dtype: str = COMPUTE_DTYPE, device_map: str = DEVICE_MAP,
    overwrite: bool = overwrite_option(),
    allow_pickle: bool = ALLOW_PICKLE,
    trust_remote_code: bool = TRUST_REMOTE_CODE,
    quiet: bool = QUIET,
) -> None:
    """layer-diff along a chain of checkpoints: each step k-1 -> k and the base against each stage; where each stage lands."""
    progress.configure("quiet" if quiet else "auto")
    from alignloc.experiments.trajectory import (
        FILES,
        chain_prompts,
        stage_dirs,
        trajectory,
        trajectory_prompts,
    )
    from alignloc.layerdiff.answers import ANSWERS_FILE
    from alignloc.models.backends import BACKENDS
    from alignloc.models.refs import split_zoo
    from alignloc.store.outputs import check_out_dir

    if len(checkpoints) < 2:
        raise UsageError(f"give at least two checkpoints (CKPT0 CKPT1 ...), got {len(checkpoints)}")
    check.at_least("--n-boot", n_boot)
    check.seed(seed)
    check.at_least("--batch-size", batch_size)
    check.one_of("--backend", backend, BACKENDS)
    opts = load_options(device, compute_dtype, device_map, allow_pickle, trust_remote_code)
    check.model_refs(*checkpoints, allow_pickle=allow_pickle)
    zoo_ckpt = any(split_zoo(c) is not None for c in checkpoints)
    answers = None
    if prompts is not None:
        prompt_list = check.prompt_file(prompts)
    elif zoo_ckpt:
        prompt_list = trajectory_prompts(checkpoints)
    else:  # the built-in suites, targets written by the last stage
        check_out_dir(out, (*FILES, ANSWERS_FILE, *stage_dirs(len(checkpoints) - 1)), overwrite=overwrite)
        prompt_list, answers = chain_prompts(checkpoints, out, suite, chat_template, answer_tokens=answer_tokens,
                                             batch_size=batch_size, options=opts, log=lambda m: typer.echo(m, err=True))
    for d in stage_dirs(len(checkpoints) - 1):
        watch(out / d / "acts")
    summary = trajectory(checkpoints, out, prompt_list, n_boot=n_boot, seed=seed, probes=probes, what_changed=what_changed,
                         batch_size=batch_size, backend=backend, overwrite=overwrite, options=opts,
                         log=lambda m: typer.echo(m, err=True),
                         answers=answers)
    for s in summary["stages"]:
        typer.echo(f"- stage {s['stage']} ({s['ref']}): step changed layers {s['step']['changed_layers']} (largest weight "
                   f"change: layer {s['step']['top_weight_layer']}); from the base: {s['from_base']['changed_layers']}")
    if summary["figure"]["png_skipped"]:
        typer.echo(f"alignloc: note: {summary['figure']['png_skipped']}", err=True)
    typer.echo(f"trajectory: {out / 'trajectory.html'}  {out / 'trajectory.json'}")


def entry() -> int:
    """The ``alignloc`` command: the process is the command's, so glibc keeps freed memory for reuse
    (``models.heap.keep_freed_memory``: large tensors without a page fault each), then ``main``."""
    from alignloc.models.heap import keep_freed_memory

    keep_freed_memory()
    return main()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default: sys.argv[1:]); return the exit code (0, 2 for a user error, 130 if interrupted)."""
    try:
        _quiet_libraries()
    except KeyboardInterrupt:
        return 130
    return run(app, argv)
