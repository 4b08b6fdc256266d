"""The ``alignloc`` command line: a thin typed shell over the library. ``main(argv)`` is testable."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import typer

app = typer.Typer(
    name="alignloc",
    help="Where inside a network does post-training land, and what kind of change is it?",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _user_errors() -> tuple[type[BaseException], ...]:
    from alignloc.models.backends import BackendError
    from alignloc.models.pair import PairMismatchError
    from alignloc.models.refs import ModelRefError
    from alignloc.prompts import PromptFormatError
    from alignloc.report.figures import ResultError
    from alignloc.sites import SiteError
    from alignloc.store import StoreError
    from alignloc.tokens import PromptTooLongError

    # Errors a user can fix: printed as one clear line (exit 2), never as a traceback.
    return (BackendError, ModelRefError, PairMismatchError, PromptFormatError, ResultError, SiteError, StoreError,
            PromptTooLongError)


def _quiet_libraries() -> None:
    if not sys.stderr.isatty():
        os.environ.setdefault("TQDM_DISABLE", "1")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)


@app.command()
def capture(
    base: str = typer.Argument(..., help="Base model: local HF directory, hub id, or zoo:NAME."),
    tuned: str | None = typer.Argument(None, help="Post-trained model (directory, hub id, peft adapter dir). Omit with zoo:NAME."),
    prompts: Path | None = typer.Option(None, "--prompts", "-p", help="JSONL prompt file (see README). Default for zoo:NAME: its bundled prompts."),
    out: Path = typer.Option(..., "--out", "-o", help="Store directory to create, reuse or resume."),
    sites: str = typer.Option("resid_post", help="Comma list of resid_pre|resid_mid|resid_post|attn_out|mlp_out[.LAYER]."),
    layers: str | None = typer.Option(None, help="Layers for sites without .LAYER: '*', '0,2', '1-3', '-1'."),
    positions: str = typer.Option("last", help="last | all | an integer index | a named position from the prompts."),
    batch_size: int = typer.Option(16, help="Prompts per forward pass (peak memory scales with it)."),
    dtype: str = typer.Option("float32", help="Storage dtype: float32 | float16 | bfloat16."),
    backend: str = typer.Option("hf", help="hf (forward hooks, fastest) | bridge (TransformerLens v4) | nnsight."),
    overwrite: bool = typer.Option(False, help="Replace a store that holds a different capture."),
    allow_pickle: bool = typer.Option(False, help="Allow pickle (.bin) checkpoints. Only for sources you trust."),
    trust_remote_code: bool = typer.Option(False, help="Run model code shipped with a hub checkpoint."),
) -> None:
    """Capture activations of a base/tuned pair on the same prompts into an on-disk store."""
    from alignloc.capturing import capture as run_capture
    from alignloc.models.pair import load_pair

    pair = load_pair(base, tuned, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    if prompts is None:
        prompts = _default_prompts(pair)
    store = run_capture(pair, prompts, out, sites=sites, positions=positions, layers=layers,
                        batch_size=batch_size, dtype=dtype, backend=backend, overwrite=overwrite)
    typer.echo(store.summary())


def _default_prompts(pair) -> list:
    """An organism's bundled prompt sets, concatenated (ids prefixed by the set on collisions)."""
    from alignloc.prompts import PromptFormatError

    if pair.name is None:
        raise PromptFormatError("--prompts is required unless the pair is an organism (zoo:NAME)")
    return organism_prompts(pair.name)


def organism_prompts(name: str, size: str = "tiny") -> list:
    """All prompts an organism ships (every file under its prompts/), with unique ids."""
    import dataclasses

    from alignloc import zoo
    from alignloc.prompts import load_prompts

    out, seen = [], set()
    for stem, path in sorted(zoo.resolve(name, size=size).prompts.items()):
        for p in load_prompts(path):
            if p.id in seen:
                p = dataclasses.replace(p, id=f"{stem}/{p.id}")
            seen.add(p.id)
            out.append(p)
    return out


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
    out: Path = typer.Option(Path("alignloc-demo"), "--out", "-o", help="Where the demo writes its store and report."),
    size: str = typer.Option("tiny", help="Zoo size: tiny (CPU minutes) | small."),
) -> None:
    """Build (or reuse) the default organism and run layer-diff on it: where is the change, of what kind?"""
    from alignloc import zoo
    from alignloc.layerdiff.run import default_control, layer_diff
    from alignloc.models.pair import load_pair

    name = organism or zoo.DEFAULT_ORGANISM
    typer.echo(f"[1/3] organism {name} ({size}): building or reusing under {zoo.zoo_root()}", err=True)
    entry = zoo.resolve(name, size=size)
    pair = load_pair(str(entry.base), str(entry.tuned))
    pair.name, pair.ground_truth = name, entry.ground_truth
    typer.echo(f"[2/3] layer-diff: capture -> {out / 'acts'}, weights, shift, lens, probes, verdict", err=True)
    report = layer_diff(pair, organism_prompts(name, size), out, control=default_control(pair, size))
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
    base: str = typer.Argument(..., help="Base model: local HF directory, hub id, or zoo:NAME (then omit TUNED)."),
    tuned: str | None = typer.Argument(None, help="Post-trained model (directory, hub id, peft adapter dir)."),
    prompts: Path | None = typer.Option(None, "--prompts", "-p", help="JSONL prompt file (see README). Default for zoo:NAME: its bundled prompts."),
    out: Path = typer.Option(Path("layer-diff-report"), "--out", "-o", help="Report directory (index.html, report.json, summary.md)."),
    control: str | None = typer.Option(None, help="Control checkpoint on the same base (e.g. continued pretraining) that sets "
                                       "the noise floors; 'none' to disable. Default: the zoo's control for zoo:NAME, else none."),
    store: Path | None = typer.Option(None, help="Activation store to create or reuse (default OUT/acts)."),
    n_boot: int = typer.Option(1000, help="Bootstrap resamples over prompts for every interval."),
    seed: int = typer.Option(0, help="Seed for bootstrap, folds and control tasks."),
    probes: bool = typer.Option(True, help="Train per-layer linear probes (--no-probes to skip)."),
    causal: bool = typer.Option(False, help="Also run the causal tests: graft windows, a learned delta mask, cross-/within-model "
                                "patching with layer x position grids, attribution; the verdict then names layers from them."),
    windows: str | None = typer.Option(None, help="With --causal: graft window sizes, e.g. '1,2,4' (default: 1, 2, 4, ... up to "
                                       "half the layers)."),
    mask_steps: int = typer.Option(100, help="With --causal: steps of the learned delta mask (0 skips it)."),
    batch_size: int = typer.Option(16, help="Prompts per forward pass."),
    backend: str = typer.Option("hf", help="hf | bridge | nnsight (same activations)."),
    overwrite: bool = typer.Option(False, help="Replace a store that holds a different capture."),
    allow_pickle: bool = typer.Option(False, help="Allow pickle (.bin) checkpoints. Only for sources you trust."),
    trust_remote_code: bool = typer.Option(False, help="Run model code shipped with a hub checkpoint."),
) -> None:
    """Compare base and tuned layer by layer: where is the change, and is it knowledge or behavior?"""
    from alignloc.layerdiff.run import default_control, layer_diff
    from alignloc.models.pair import load_model, load_pair

    pair = load_pair(base, tuned, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    prompt_list = _default_prompts(pair) if prompts is None else prompts
    if not isinstance(prompt_list, list):
        from alignloc.prompts import load_prompts

        prompt_list = load_prompts(prompt_list)
    if control is None:
        ctrl = default_control(pair)
    elif control.lower() == "none":
        ctrl = None
    else:
        ctrl = load_model(control, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    sizes = None
    if windows is not None:
        from alignloc.causal.graft import window_sizes

        try:
            sizes = window_sizes(pair.n_layers, windows)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--windows") from None
    if mask_steps < 0:
        raise typer.BadParameter(f"must be >= 0, got {mask_steps}", param_hint="--mask-steps")
    report = layer_diff(pair, prompt_list, out, control=ctrl, store=store, n_boot=n_boot, seed=seed, probes=probes,
                        batch_size=batch_size, backend=backend, overwrite=overwrite, causal=causal, windows=sizes,
                        mask_steps=mask_steps)
    for line in report["verdict"]["summary"]:
        typer.echo(f"- {line}")
    typer.echo(f"report: {out / 'index.html'}  {out / 'report.json'}  {out / 'summary.md'}")


@app.command("localize-bench")
def localize_bench_cmd(
    size: str = typer.Option("tiny", help="Zoo size to build or reuse: tiny | small."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the full results (per method: hit@1, hit@k, ...) as JSON."),
    markdown: Path | None = typer.Option(None, "--markdown", help="Write the tables as Markdown."),
    n_prompts: int = typer.Option(48, help="Prompts per organism (the first N of its behavior prompt file)."),
    methods: str | None = typer.Option(None, help="Comma-separated subset of methods (default: all)."),
    tiers: str = typer.Option("easy,hard", help="easy (edits confined to their layers), hard (the same edits under a drift "
                              "of every layer), or both."),
) -> None:
    """Rank layers by each localization method on every organism with a planted edit: hit@1, hit@k, control false positives."""
    import json

    from alignloc.causal.bench import METHODS, TIERS, localize_bench, render_bench_markdown
    from alignloc.report import json_safe
    from alignloc.store.manifest import atomic_write_bytes

    chosen = methods.split(",") if methods else None
    if chosen and set(chosen) - set(METHODS):
        raise typer.BadParameter(f"unknown {sorted(set(chosen) - set(METHODS))}; choose from {', '.join(METHODS)}",
                                 param_hint="--methods")
    tier_list = [t.strip() for t in tiers.split(",") if t.strip()]
    if not tier_list or set(tier_list) - set(TIERS):
        raise typer.BadParameter(f"{tiers!r}; choose from {', '.join(TIERS)}", param_hint="--tiers")
    result = localize_bench(size=size, n_prompts=n_prompts, methods=chosen, tiers=tier_list,
                            log=lambda m: typer.echo(m, err=True))
    text = render_bench_markdown(result)
    typer.echo(text)
    if json_out is not None:
        atomic_write_bytes(json_out, json.dumps(json_safe(result), indent=1, allow_nan=False).encode())
        typer.echo(f"json: {json_out}", err=True)
    if markdown is not None:
        atomic_write_bytes(markdown, text.encode())


@app.command("context-prior")
def context_prior_cmd(
    model: str = typer.Argument(..., help="A model: local HF directory, hub id, or zoo:NAME[:base|tuned] (e.g. zoo:base)."),
    prompts: Path | None = typer.Option(None, "--prompts", "-p", help="JSONL knowledge-conflict prompts (see README). "
                                        "Default for zoo:NAME: its bundled context prompts."),
    out: Path = typer.Option(Path("context-prior-report"), "--out", "-o", help="Report directory."),
    text: Path | None = typer.Option(None, help="Plain text for perplexity, one passage per line (default: the prompts' contexts)."),
    layers: str = typer.Option("*", help="Layers to intervene at: '*', '0,2' or '1-3'."),
    instruction: str | None = typer.Option(None, help="The instruction of the 'instruction' prompt-only fix."),
    gate: str = typer.Option("both", help="always | context | both: intervene on every prompt, only where a context is given, or report both."),
    heads: bool = typer.Option(True, help="Also scale each attention head at the last token (--no-heads to skip)."),
    allow_pickle: bool = typer.Option(False, help="Allow pickle (.bin) checkpoints. Only for sources you trust."),
    trust_remote_code: bool = typer.Option(False, help="Run model code shipped with a hub checkpoint."),
) -> None:
    """Can a representation edit make the model follow a context that contradicts a strong prior, where prompting cannot?"""
    from alignloc.contextprior.data import load_sets
    from alignloc.contextprior.run import DEFAULT_INSTRUCTION, context_prior_report
    from alignloc.models.pair import load_model
    from alignloc.models.refs import split_zoo
    from alignloc.prompts import PromptFormatError, load_prompts
    from alignloc.sites import parse_layers
    from alignloc.tokens import default_bos

    if gate not in ("always", "context", "both"):
        raise typer.BadParameter(f"{gate!r}; use always, context or both", param_hint="--gate")
    lm = load_model(model, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    zoo_ref = split_zoo(model)
    if prompts is None and zoo_ref is None:
        raise PromptFormatError("--prompts is required unless MODEL is a zoo organism (zoo:NAME)")
    prompt_list = load_prompts(prompts) if prompts is not None else organism_prompts(zoo_ref[0])
    texts = None
    if text is not None:
        if not text.is_file():
            raise PromptFormatError(f"{text}: text file not found")
        texts = [ln.strip() for ln in text.read_text(encoding="utf-8").splitlines() if ln.strip()]
    sets = load_sets(prompt_list, texts, src=str(prompts or model))
    report = context_prior_report(lm, sets, out, default_bos(lm.tokenizer, lm.config.model_type),
                                  layers=parse_layers(layers, lm.n_layers), instruction=instruction or DEFAULT_INSTRUCTION,
                                  gate=gate, heads=heads, log=lambda m: typer.echo(m, err=True))
    for line in report["verdict"]["summary"]:
        typer.echo(f"- {line}")
    typer.echo(f"report: {out / 'index.html'}  {out / 'report.json'}  {out / 'summary.md'}")


@app.command("proxy-tune")
def proxy_tune_cmd(
    large_base: str | None = typer.Option(None, help="The large pretrained model (directory, hub id, zoo:NAME[:side])."),
    small_base: str | None = typer.Option(None, help="The small pretrained model (same tokenizer)."),
    small_tuned: str | None = typer.Option(None, help="The small post-trained model (or a peft adapter dir on SMALL_BASE)."),
    large_tuned: str | None = typer.Option(None, help="Optional: the large model post-trained directly, for comparison."),
    zoo_mode: bool = typer.Option(False, "--zoo", help="Use zoo:base-large, zoo:base, an organism tuned from base and the same "
                                  "recipe applied to base-large (built on first use)."),
    organism: str = typer.Option("chat-sft-full", help="With --zoo: the behavior organism."),
    prompts: Path | None = typer.Option(None, "--prompts", "-p", help="JSONL with knowledge and behavior prompts (targets "
                                        "required). Default with --zoo: the organism's."),
    beta: str = typer.Option("0,0.5,1,1.5", help="Comma-separated betas for the proxy."),
    out: Path = typer.Option(Path("proxy-tune-report"), "--out", "-o", help="Report directory."),
    allow_pickle: bool = typer.Option(False, help="Allow pickle (.bin) checkpoints. Only for sources you trust."),
    trust_remote_code: bool = typer.Option(False, help="Run model code shipped with a hub checkpoint."),
) -> None:
    """Decoding-time alignment (large base + beta * (small tuned - small base)) against weight fine-tuning."""
    from alignloc.decoding.experiment import proxy_tune_report
    from alignloc.models.pair import load_model
    from alignloc.prompts import PromptFormatError, load_prompts
    from alignloc.tokens import default_bos

    try:
        betas = [float(b) for b in beta.split(",") if b.strip()]
    except ValueError:
        raise typer.BadParameter(f"{beta!r} is not a comma-separated list of numbers", param_hint="--beta") from None
    if zoo_mode:
        if organism.endswith("-large"):
            raise typer.BadParameter("name the organism tuned from base; its -large twin is built for comparison", param_hint="--organism")
        large_base, small_base = "zoo:base-large", "zoo:base"
        small_tuned, large_tuned = f"zoo:{organism}", f"zoo:{organism}-large"
    elif not (large_base and small_base and small_tuned):
        raise typer.BadParameter("give --large-base, --small-base and --small-tuned, or --zoo", param_hint="models")
    opts = {"allow_pickle": allow_pickle, "trust_remote_code": trust_remote_code}
    lb, sb = load_model(large_base, **opts), load_model(small_base, **opts)
    st = load_model(small_tuned, **opts)
    lt = load_model(large_tuned, **opts) if large_tuned else None
    if prompts is not None:
        prompt_list = load_prompts(prompts)
    elif zoo_mode:
        prompt_list = organism_prompts(organism)
    else:
        raise PromptFormatError("--prompts is required unless --zoo is given")
    report = proxy_tune_report(lb, sb, st, prompt_list, out, default_bos(lb.tokenizer, lb.config.model_type), lt, betas,
                               log=lambda m: typer.echo(m, err=True))
    for line in report["verdict"]["summary"]:
        typer.echo(f"- {line}")
    typer.echo(f"report: {out / 'index.html'}  {out / 'report.json'}  {out / 'summary.md'}")


@app.command()
def figures(
    results: list[Path] = typer.Argument(None, help="JSON results (report.json of layer-diff, context-prior, proxy-tune, or "
                                         "localize-bench --json). None: run or reuse the zoo experiments."),
    out: Path = typer.Option(Path("figures"), "--out", "-o", help="Directory for the figures."),
    fmt: str = typer.Option("pdf,svg,png", "--format", help="Comma-separated: pdf, svg, png."),
    cache: Path = typer.Option(Path("alignloc-results"), help="Where the zoo experiments' results are kept and reused."),
) -> None:
    """Publication figures (plotly + kaleido, via the system Chromium) from results, or from the zoo experiments."""
    from alignloc.report.paper import make_figures, zoo_results

    formats = [f.strip() for f in fmt.split(",") if f.strip()]
    if set(formats) - {"pdf", "svg", "png"} or not formats:
        raise typer.BadParameter(f"{fmt!r}; use a comma-separated subset of pdf, svg, png", param_hint="--format")
    log = lambda m: typer.echo(m, err=True)  # noqa: E731
    paths = list(results) if results else zoo_results(cache, log)
    written = make_figures(paths, out, formats, log)
    typer.echo(f"{len(written)} files in {out}: " + ", ".join(sorted({p.stem for p in written})))


def _mount_subcommands() -> None:
    try:
        from alignloc.zoo.commands import zoo_app
    except ImportError:  # the zoo is optional until it is built
        return
    app.add_typer(zoo_app, name="zoo", help="Model organisms: build and list base/post-trained pairs with ground truth.")


_mount_subcommands()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default: sys.argv[1:]); return the exit code."""
    _quiet_libraries()
    try:
        app(args=argv, standalone_mode=False)
    except _user_errors() as e:
        typer.echo(f"alignloc: error: {e}", err=True)
        return 2
    except typer.Exit as e:
        return e.exit_code
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("alignloc: interrupted; rerun the same command to resume", err=True)
        return 130
    except Exception as e:
        if hasattr(e, "show") and hasattr(e, "exit_code"):  # click usage errors (typer vendors click)
            e.show()
            return e.exit_code
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
