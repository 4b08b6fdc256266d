"""The experiment commands of the ``alignloc`` command line: ``localize-bench``, ``context-prior``,
``proxy-tune`` and ``figures`` (each a thin typed shell over its experiment; ``cli`` mounts them)."""

from __future__ import annotations

from pathlib import Path

import typer

from alignloc import options as check
from alignloc import progress
from alignloc.cli.errors import watch
from alignloc.cli.options import (
    ALLOW_PICKLE,
    COMPUTE_DTYPE,
    DEVICE,
    DEVICE_MAP,
    PROMPTS_HELP,
    QUIET,
    TRUST_REMOTE_CODE,
    json_option,
    load_options,
    out_option,
    overwrite_option,
    prompts_option,
    size_option,
)
from alignloc.errors import UsageError

BENCH_FILES = ("report.json", "summary.md")  # what localize-bench writes into --out


def localize_bench_cmd(
    size: str = size_option("Zoo size to build or reuse: tiny | small | real (tiny-s1, tiny-s2: --seeds)."),
    out: Path = out_option(Path("localize-bench-report"), "Report directory: report.json (per method: hit@1, hit@k, "
                           "every score and ranking; `alignloc figures` reads it) and summary.md (the tables)."),
    as_json: bool = json_option("Print the result as JSON on stdout instead of the Markdown tables (both files are "
                                "written to --out either way)."),
    n_prompts: int = typer.Option(48, help="Prompts per organism (the first N of its behavior prompt file)."),
    methods: str | None = typer.Option(None, help="Comma-separated subset of methods (default: all)."),
    tiers: str | None = typer.Option(None, help="easy (edits confined to their layers), hard (the same edits under a drift "
                              "of every layer that a rescaling makes outweigh them), natural (the edits trained on top "
                              "of that drift, sequentially; builds five more organisms), natural-large (the same on the 8-layer "
                              "base, single-layer edits at five layers; builds seven more), comma-separated (default: easy,hard)."),
    seeds: int = typer.Option(1, help="Pool the organisms of --size and its seed variants (tiny has 3: tiny, tiny-s1, "
                              "tiny-s2, each another world and training seed; each builds its tiers' organisms once)."),
    device: str = DEVICE, compute_dtype: str = COMPUTE_DTYPE, device_map: str = DEVICE_MAP,
    overwrite: bool = overwrite_option(),
    quiet: bool = QUIET,
) -> None:
    """Rank layers by each localization method on every organism with a planted edit: hit@1, hit@k, control false positives."""
    progress.configure("quiet" if quiet else "auto")
    import json

    from alignloc.causal.bench import METHODS
    from alignloc.experiments.localize_bench import TIERS, localize_bench
    from alignloc.report import json_safe
    from alignloc.report.bench import render_bench_markdown
    from alignloc.store.outputs import check_out_dir, write_outputs
    from alignloc.zoo import REAL_SIZE, check_size
    from alignloc.zoo.config import seeded_sizes

    check_size(size)
    check.at_least("--n-prompts", n_prompts)
    check.at_least("--seeds", seeds)
    if size != REAL_SIZE:
        seeded_sizes(size, seeds)  # a size without that many seed variants: the error names them
    opts = load_options(device, compute_dtype, device_map)
    chosen = check.subset("--methods", methods, list(METHODS)) if methods is not None else None
    tier_list = None if tiers is None else check.subset("--tiers", tiers, list(TIERS))
    check_out_dir(out, BENCH_FILES, overwrite=overwrite)
    result = localize_bench(size=size, n_prompts=n_prompts, methods=chosen, tiers=tier_list,
                            log=lambda m: typer.echo(m, err=True), options=opts, seeds=seeds)
    report = result.to_json()
    text = render_bench_markdown(report)
    data = json.dumps(json_safe(report), indent=1, allow_nan=False)
    write_outputs(out, {"report.json": data.encode(), "summary.md": text.encode()})
    typer.echo(data if as_json else text)
    typer.echo(f"report: {out / 'report.json'}  {out / 'summary.md'}", err=True)


def context_prior_cmd(
    model: str = typer.Argument(..., help="A model: local HF directory, hub id, or zoo:NAME[@SIZE][:base|tuned] (e.g. zoo:base)."),
    prompts: Path | None = prompts_option("JSONL knowledge-conflict prompts (see docs/experiments.md). Default for "
                                          "zoo:NAME: its bundled context prompts."),
    out: Path = out_option(Path("context-prior-report"), "Report directory (index.html, report.json, summary.md)."),
    text: Path | None = typer.Option(None, help="Plain text for perplexity, one passage per line (default: the prompts' contexts)."),
    layers: str = typer.Option("*", help="Layers to intervene at: '*', '0,2' or '1-3'."),
    instruction: str | None = typer.Option(None, help="The instruction of the 'instruction' prompt-only fix."),
    gate: str = typer.Option("both", help="always | context | both: intervene on every prompt, only where a context is given, or report both."),
    heads: bool = typer.Option(True, help="Also scale each attention head at the last token (--no-heads to skip)."),
    head_search: bool = typer.Option(True, help="Also scale the 1, 3, 10 heads whose direct effect most favours the context."),
    conflicts: str | None = typer.Option(None, help="Instead of --prompts: a conflict set built from real facts "
                                         "(capitals | capitals-direct), priors measured on MODEL (see docs/experiments.md)."),
    device: str = DEVICE, compute_dtype: str = COMPUTE_DTYPE, device_map: str = DEVICE_MAP,
    overwrite: bool = overwrite_option(),
    allow_pickle: bool = ALLOW_PICKLE,
    trust_remote_code: bool = TRUST_REMOTE_CODE,
    quiet: bool = QUIET,
) -> None:
    """Can a representation edit make the model follow a context that contradicts a strong prior, where prompting cannot?"""
    progress.configure("quiet" if quiet else "auto")
    from alignloc.contextprior.data import load_sets
    from alignloc.experiments.conflicts import SETS, named_sets
    from alignloc.experiments.contextprior import DEFAULT_INSTRUCTION, context_prior_report
    from alignloc.models.pair import load_model
    from alignloc.prompts import PromptFormatError
    from alignloc.report import REPORT_FILES
    from alignloc.sites import parse_layers
    from alignloc.store.outputs import check_out_dir
    from alignloc.textio import read_text
    from alignloc.tokens import default_bos

    check.one_of("--gate", gate, ("always", "context", "both"))
    opts = load_options(device, compute_dtype, device_map, allow_pickle, trust_remote_code)
    check.layer_spec(layers, check.model_ref(model, allow_pickle))
    named = check.conflict_set(conflicts, prompts, tuple(SETS))
    prompt_list = None if named else check.prompts_for(model, prompts, "MODEL is a zoo model (zoo:NAME) or --conflicts is given")
    texts = None
    if text is not None:
        texts = [ln.strip() for ln in read_text(text, PromptFormatError, "text file").split("\n") if ln.strip()]
        if not texts:
            raise PromptFormatError(f"{text}: no text in the file (write one passage per line)")
    check_out_dir(out, REPORT_FILES, overwrite=overwrite)
    sets = None if named else load_sets(prompt_list, texts, src=str(prompts or model))
    lm = load_model(model, opts)
    bos, info = default_bos(lm.tokenizer, lm.config.model_type), None
    if named:
        sets, info = named_sets(lm, named, bos, texts, log=lambda m: typer.echo(m, err=True))
    report = context_prior_report(lm, sets, out, bos, conflicts=info,
                                  layers=parse_layers(layers, lm.n_layers), instruction=instruction or DEFAULT_INSTRUCTION,
                                  gate=gate, heads=heads, head_search=head_search, log=lambda m: typer.echo(m, err=True))
    for line in report["verdict"]["summary"]:
        typer.echo(f"- {line}")
    typer.echo(f"report: {out / 'index.html'}  {out / 'report.json'}  {out / 'summary.md'}")


def proxy_tune_cmd(
    large_base: str | None = typer.Option(None, help="The large pretrained model (directory, hub id, zoo:NAME[:side])."),
    small_base: str | None = typer.Option(None, help="The small pretrained model (same tokenizer)."),
    small_tuned: str | None = typer.Option(None, help="The small post-trained model (or a peft adapter dir on SMALL_BASE)."),
    large_tuned: str | None = typer.Option(None, help="Optional: the large model post-trained directly, for comparison."),
    zoo_mode: bool = typer.Option(False, "--zoo", help="Use zoo:base-large, zoo:base, an organism tuned from base and the same "
                                  "recipe applied to base-large (built on first use)."),
    organism: str = typer.Option("chat-sft-full", help="With --zoo: the behavior organism (chat-lima keeps its knowledge)."),
    contrast: str | None = typer.Option(None, help="With --zoo: a second organism reported side by side on the same prompts "
                                        "and bases (e.g. --organism chat-lima --contrast chat-sft-full)."),
    prompts: Path | None = prompts_option(PROMPTS_HELP + " Knowledge and behavior prompts, targets required. Default "
                                          "with --zoo: the organism's."),
    beta: str = typer.Option("0,0.5,1,1.5", help="Comma-separated betas for the proxy."),
    out: Path = out_option(Path("proxy-tune-report"), "Report directory (index.html, report.json, summary.md, "
                           "large-layer-diff/)."),
    device: str = DEVICE, compute_dtype: str = COMPUTE_DTYPE, device_map: str = DEVICE_MAP,
    overwrite: bool = overwrite_option(),
    allow_pickle: bool = ALLOW_PICKLE,
    trust_remote_code: bool = TRUST_REMOTE_CODE,
    quiet: bool = QUIET,
) -> None:
    """Decoding-time alignment (large base + beta * (small tuned - small base)) against weight fine-tuning."""
    progress.configure("quiet" if quiet else "auto")
    from alignloc.experiments.proxytune import proxy_tune_report, split_prompts
    from alignloc.models.pair import load_model
    from alignloc.models.tokcheck import check_shared_tokenizer
    from alignloc.report import REPORT_FILES
    from alignloc.store.outputs import check_out_dir
    from alignloc.tokens import default_bos

    betas = check.betas(beta)
    opts = load_options(device, compute_dtype, device_map, allow_pickle, trust_remote_code)
    if zoo_mode:
        check.organism("--organism", organism)
        large_base, small_base = "zoo:base-large", "zoo:base"
        small_tuned, large_tuned = f"zoo:{organism}", f"zoo:{organism}-large"
        if contrast is not None:
            check.organism("--contrast", contrast, organism)
            check.model_refs(f"zoo:{contrast}", f"zoo:{contrast}-large", allow_pickle=allow_pickle)
    elif contrast is not None:
        raise UsageError("--contrast needs --zoo")
    elif not (large_base and small_base and small_tuned):
        raise UsageError("give --large-base, --small-base and --small-tuned, or --zoo")
    check.model_refs(large_base, small_base, small_tuned, large_tuned, allow_pickle=allow_pickle)
    check_out_dir(out, (*REPORT_FILES, "large-layer-diff"), overwrite=overwrite)
    check_shared_tokenizer({"--large-base": large_base, "--small-base": small_base, "--small-tuned": small_tuned,
                            "--large-tuned": large_tuned, "--contrast": contrast and f"zoo:{contrast}"},
                           allow_pickle, trust_remote_code)
    prompt_list = check.prompts_for(small_tuned if zoo_mode else "", prompts, "--zoo is given")  # last: --zoo builds the organism
    split_prompts(prompt_list)
    watch(out / "large-layer-diff" / "acts")
    lb, sb = load_model(large_base, opts), load_model(small_base, opts)
    st = load_model(small_tuned, opts)
    lt = load_model(large_tuned, opts) if large_tuned else None
    other = {"label": f"zoo:{contrast}", "small_tuned": load_model(f"zoo:{contrast}", opts),
             "large_tuned": load_model(f"zoo:{contrast}-large", opts)} if contrast else None
    report = proxy_tune_report(lb, sb, st, prompt_list, out, default_bos(lb.tokenizer, lb.config.model_type), lt, betas,
                               log=lambda m: typer.echo(m, err=True), contrast=other)
    for line in report["verdict"]["summary"] + report.get("side_by_side", {}).get("summary", []):
        typer.echo(f"- {line}")
    typer.echo(f"report: {out / 'index.html'}  {out / 'report.json'}  {out / 'summary.md'}")


def figures(
    results: list[Path] = typer.Argument(None, help="JSON results (report.json of layer-diff, context-prior, proxy-tune, or "
                                         "localize-bench). None: run or reuse the zoo experiments."),
    out: Path = out_option(Path("figures"), "Directory for the figures."),
    fmt: str = typer.Option("pdf,svg,png", "--format", help="Comma-separated: pdf, svg, png (drawn in Chromium by kaleido), "
                            "html (one page), json (plotly's, per figure): these two need no browser."),
    cache: Path = typer.Option(Path("alignloc-results"), help="Where the zoo experiments' results are kept and reused."),
    device: str = DEVICE, compute_dtype: str = COMPUTE_DTYPE, device_map: str = DEVICE_MAP,
    overwrite: bool = overwrite_option(),
    quiet: bool = QUIET,
) -> None:
    """Publication figures (plotly + kaleido, via the system Chromium) from results, or from the zoo experiments.

    --device, --compute-dtype and --device-map place the models of the zoo experiments (run when no RESULTS are
    given); drawing figures from results loads no model."""
    progress.configure("quiet" if quiet else "auto")
    from alignloc.experiments.paper import EXPERIMENTS, zoo_results
    from alignloc.report.figfiles import FORMATS
    from alignloc.report.paper import make_figures
    from alignloc.store.outputs import check_out_dir

    formats = check.subset("--format", fmt, FORMATS)
    opts = load_options(device, compute_dtype, device_map)
    log = lambda m: typer.echo(m, err=True)  # noqa: E731
    if results:
        paths = list(results)  # make_figures reads and checks every one, then the folder, before it writes anything
    else:
        check_out_dir(out, [], overwrite=overwrite)
        check_out_dir(cache, list(EXPERIMENTS), overwrite=overwrite, option="--cache")
        watch(f"finished experiments under {cache}")
        paths = zoo_results(cache, log, opts)
    written = make_figures(paths, out, formats, log, overwrite=overwrite)
    typer.echo(f"{len(written)} files in {out}: " + ", ".join(sorted({p.stem for p in written})))


COMMANDS = {"localize-bench": localize_bench_cmd, "context-prior": context_prior_cmd, "proxy-tune": proxy_tune_cmd, "figures": figures}  # name -> function, in --help order
