"""`wherefrom fit`, `score` and `index`: the passes over a corpus."""

from __future__ import annotations

from pathlib import Path

import typer

from wherefrom.cli.common import (
    DEVICE,
    DRY_RUN,
    DTYPE,
    FACTORS,
    QUIET,
    RESTART,
    app,
    choice,
    err,
    fit_opt,
    index_opt,
    print_dry_run,
    run_action,
    score_opt,
)
from wherefrom.errors import WherefromError
from wherefrom.options import (
    FISHERS,
    INDEX_COMPRESSIONS,
    REFINES,
    STOPS,
    STRATEGIES,
    UNIT_VIEWS,
    ExecutionOptions,
    FitOptions,
    IndexOptions,
    ScoreOptions,
)


@app.command()
def fit(
    model: str = typer.Option(..., help="Local HF model folder, .gguf file, or PEFT adapter folder."),
    corpus: Path = typer.Option(..., help="Training corpus: .jsonl, .txt, .parquet, or a datasets folder."),
    out: Path = typer.Option(..., help="Run folder to write factors.safetensors and manifest.json into."),
    modules: str = fit_opt("modules"),
    strategy: str = fit_opt("strategy"),
    fisher: str = fit_opt("fisher"),
    max_length: int = fit_opt("max_length", "--max-length"),
    pack: bool = fit_opt("pack", "--pack"),
    batch_size: int = fit_opt("batch_size", "--batch-size"),
    seed: int = fit_opt("seed"),
    shard_size: int = fit_opt("shard_size", "--shard-size"),
    factor_blocks: int = fit_opt("factor_blocks", "--factor-blocks"),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Also load a model stored only as pickle "
                                      "(pytorch_model.bin): loading pickle can run code, so only for files you trust. "
                                      "The run remembers it for score, index and serve."),
    device: str = DEVICE,
    dtype: str = DTYPE,
    factors: str = FACTORS,
    dry_run: bool = DRY_RUN,
    restart: bool = RESTART,
    quiet: bool = QUIET,
) -> None:
    """Fit each tracked layer's curvature (EK-FAC by default) on a corpus."""

    def action() -> None:
        from wherefrom.api import fit as fit_run

        options = FitOptions(max_length=max_length, pack=pack, batch_size=batch_size, shard_size=shard_size,
                             modules=modules, strategy=choice(strategy, STRATEGIES, "--strategy"),
                             fisher=choice(fisher, FISHERS, "--fisher"), seed=seed, factor_blocks=factor_blocks)
        execution = ExecutionOptions(device=device, dtype=dtype, factors=factors)
        if dry_run:
            from wherefrom.costs.plans import estimate_fit

            print_dry_run(lambda: estimate_fit(model, corpus, options, execution, allow_pickle), quiet)
            return
        run = fit_run(model, corpus, out, options, quiet, restart, execution, allow_pickle)
        if not quiet:
            err.print(f"fitted {len(run.manifest['layers'])} layers ({run.strategy}) on "
                       f"{run.manifest['n_sequences']} sequences → [bold]{out}[/]")

    run_action(action)


@app.command()
def score(
    run: Path | None = typer.Option(None, "--run", "--run-dir",
                                    help="Run folder written by `wherefrom fit`; with --index, default: the index's "
                                         "run (under torchrun, spell it --run-dir: torchrun's own parser takes --run "
                                         "for its --run-path)."),
    queries: Path = typer.Option(..., help="Queries .jsonl: prompt/completion, prompt_ids/completion_ids, or messages; "
                                           "a query with only a prompt is completed by the model first."),
    out: Path = typer.Option(..., help="Folder for scores.safetensors, results.jsonl and the sidecars."),
    corpus: Path | None = typer.Option(None, help="Sequences to score (default: the corpus the run was fitted on, "
                                                  "or the index's)."),
    index: Path | None = typer.Option(None, help="Gradient index written by `wherefrom index`: it ranks every "
                                                 "sequence with no pass over the corpus, and its top --rescore "
                                                 "sequences per query are scored exactly."),
    candidates: int | None = score_opt("candidates"),
    rescore: int | None = score_opt("rescore"),
    top_k: int = score_opt("top_k", "--top-k"),
    per_layer: bool = score_opt("per_layer", "--per-layer"),
    per_token: bool = score_opt("per_token", "--per-token"),
    per_token_top: int | None = score_opt("per_token_top", "--per-token-top"),
    self_influence: bool = score_opt("self_influence", "--self-influence"),
    normalize: bool = score_opt("normalize", "--normalize"),
    per_unit: int | None = score_opt("per_unit", "--per-unit"),
    unit_view: str = score_opt("unit_view", "--unit-view"),
    damping: str | None = score_opt("damping"),
    query_rank: int | None = score_opt("query_rank", "--query-rank"),
    refine: str = score_opt("refine"),
    refine_iterations: int = score_opt("refine_iterations", "--refine-iterations"),
    refine_sample: int = score_opt("refine_sample", "--refine-sample"),
    max_new_tokens: int = score_opt("max_new_tokens", "--max-new-tokens"),
    stop: str = score_opt("stop"),
    sample: bool = score_opt("sample", "--sample"),
    temperature: float = score_opt("temperature"),
    top_p: float = score_opt("top_p", "--top-p"),
    generation_seed: int = score_opt("generation_seed", "--generation-seed"),
    max_length: int | None = typer.Option(None, "--max-length", help="Tokens per sequence (default: the run's)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Sequences per pass (default: the run's)."),
    shard_size: int | None = typer.Option(None, "--shard-size", help="Sequences per shard (default: the run's)."),
    device: str = DEVICE,
    dtype: str = DTYPE,
    dry_run: bool = DRY_RUN,
    restart: bool = RESTART,
    quiet: bool = QUIET,
) -> None:
    """Score training sequences' influence on each query's completion (positive = raises its log-probability)."""

    def action() -> None:
        from wherefrom.api import score as score_run
        from wherefrom.curvature.store import load_run
        from wherefrom.index import GradientIndex
        from wherefrom.outputs.summary import print_summary
        from wherefrom.solvers.damping import parse_damping

        if run is None and index is None:
            raise WherefromError("give --run RUN (a folder written by `wherefrom fit`), or --index INDEX.")
        data = GradientIndex.open(index).manifest["options"] if index is not None else load_run(run).manifest["options"]
        options = ScoreOptions(
            **given_data_options(data, max_length, batch_size, shard_size),
            damping=parse_damping(damping), top_k=top_k, per_layer=per_layer,
            per_token=per_token, per_token_top=per_token_top, self_influence=self_influence, normalize=normalize,
            query_rank=query_rank,
            per_unit=per_unit, unit_view=choice(unit_view, UNIT_VIEWS, "--unit-view"),
            max_new_tokens=max_new_tokens, stop=choice(stop, STOPS, "--stop"), sample=sample,
            temperature=temperature, top_p=top_p,
            generation_seed=generation_seed, candidates=candidates, rescore=rescore,
            refine=choice(refine, REFINES, "--refine"), refine_iterations=refine_iterations, refine_sample=refine_sample,
        )
        execution = ExecutionOptions(device=device, dtype=dtype)
        if dry_run:
            from wherefrom.costs.plans import estimate_score

            print_dry_run(lambda: estimate_score(run, queries, corpus, options, index, execution), quiet)
            return
        result = score_run(run, queries, corpus, out, options, quiet=quiet, restart=restart, index=index,
                           execution=execution)
        if not quiet:
            print_summary(result, top_k=min(top_k, 5))
            if result.units is not None:
                from wherefrom.outputs.unit_summary import print_units

                print_units(result)
            err.print(f"scores for {len(result.queries)} queries × {len(result.sequences)} sequences → [bold]{out}[/]")

    run_action(action)


@app.command()
def index(
    run: Path = typer.Option(..., "--run", "--run-dir", help="Run folder written by `wherefrom fit` (ekfac or kfac)."),
    out: Path = typer.Option(..., help="Index folder to write (gradients.npy, scales.npy, self_influence.npy, projections, "
                                          "manifest)."),
    corpus: Path | None = typer.Option(None, help="Sequences to index (default: the corpus the run was fitted on)."),
    budget: str = index_opt("budget"),
    compression: str = index_opt("compression"),
    dry_run: bool = DRY_RUN,
    max_length: int | None = typer.Option(None, "--max-length", help="Tokens per sequence (default: the run's)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Sequences per pass (default: the run's)."),
    shard_size: int | None = typer.Option(None, "--shard-size", help="Sequences per shard (default: the run's)."),
    device: str = DEVICE,
    dtype: str = DTYPE,
    restart: bool = RESTART,
    quiet: bool = QUIET,
) -> None:
    """Store every training sequence's gradient, compressed, so `score --index` answers queries without a corpus pass."""

    def action() -> None:
        from wherefrom.curvature.store import load_run
        from wherefrom.index import build_index

        options = IndexOptions(**given_data_options(load_run(run).manifest["options"], max_length, batch_size,
                                                    shard_size), budget=budget,
                               compression=choice(compression, INDEX_COMPRESSIONS, "--compression"))
        execution = ExecutionOptions(device=device, dtype=dtype)
        if dry_run:
            from wherefrom.costs.index_plan import estimate_index

            print_dry_run(lambda: estimate_index(run, corpus, options, execution), quiet)
            return
        built = build_index(run, out, corpus, options, quiet=quiet, restart=restart, execution_options=execution)
        if not quiet:
            megabytes = built.manifest["bytes_per_sequence"] * built.n_sequences / 1e6
            err.print(f"indexed {built.n_sequences} sequences, {built.manifest['bytes_per_sequence']:,} bytes each "
                      f"({megabytes:,.1f} MB) → [bold]{out}[/]")

    run_action(action)


def given_data_options(data: dict, max_length: int | None, batch_size: int | None, shard_size: int | None
                       ) -> dict[str, object]:
    """The data options (max_length, pack, batch_size, shard_size) a run or index was made with, with those given
    on the command line instead."""
    given = {"max_length": max_length, "batch_size": batch_size, "shard_size": shard_size}
    return {"pack": data["pack"], **{name: data[name] if value is None else value for name, value in given.items()}}
