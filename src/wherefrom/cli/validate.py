"""`wherefrom validate`: checks of how faithful influence scores are; `validate lds` measures the linear
datamodeling score on the demo, or on a user's fine-tune of a pretrained model."""

from __future__ import annotations

from pathlib import Path

import typer

from wherefrom.cli.common import DEVICE, DTYPE, QUIET, app, choice, err, run_action
from wherefrom.faithfulness.recipes import FinetuneOptions
from wherefrom.options import default_of, help_of

validate_app = typer.Typer(help="Check how faithfully influence scores predict retraining.", no_args_is_help=True)
app.add_typer(validate_app, name="validate")


def finetune_opt(name: str) -> object:
    return typer.Option(default_of(FinetuneOptions, name), "--" + name.replace("_", "-"),
                        help=help_of(FinetuneOptions, name), rich_help_panel="Fine-tuning recipe (with --model)")


@validate_app.command()
def lds(
    model: Path | None = typer.Option(None, "--model", help="A local pretrained model folder: measure the LDS of "
                                      "fine-tuning it on --corpus with --recipe, instead of the demo."),
    corpus: Path | None = typer.Option(None, help="With --model: the fine-tuning corpus (one document per record)."),
    queries: Path | None = typer.Option(None, help="With --model: queries (prompt and completion) to measure."),
    models: int = typer.Option(32, "--models", help="Subsets of the corpus, each with its retrained model(s)."),
    fraction: float = typer.Option(0.5, help="Share of the corpus's documents in each subset."),
    seeds: int = typer.Option(1, help="Training seeds per subset; the measured log p is their mean."),
    methods: str = typer.Option("all", help="Comma-separated methods to compare, or 'all'."),
    damping_sweep: bool = typer.Option(False, "--damping-sweep",
                                       help="Also score EK-FAC at absolute λ = 1e-6 … 10 × the mean eigenvalue."),
    config: str | None = typer.Option(None, help="Without --model: 'default' (the demo model, the default) or "
                                                 "'reduced' (tiny, seconds)."),
    out: Path = typer.Option(Path("wherefrom-lds"), help="Folder for lds.json, lds.md and lds.png (with --model "
                                                          "also the retrained models, fits and scores)."),
    threads: int = typer.Option(2, help="CPU threads for retraining and scoring."),
    recipe: str = finetune_opt("recipe"),
    epochs: int = finetune_opt("epochs"),
    learning_rate: float = finetune_opt("learning_rate"),
    batch_size: int = finetune_opt("batch_size"),
    warmup_fraction: float = finetune_opt("warmup_fraction"),
    seed: int = finetune_opt("seed"),
    lora_rank: int = finetune_opt("lora_rank"),
    lora_alpha: float = finetune_opt("lora_alpha"),
    lora_targets: str = finetune_opt("lora_targets"),
    max_length: int = finetune_opt("max_length"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print how many trainings are left and their estimated "
                                 "time (one epoch of the recipe timed on a few sequences), and write nothing."),
    device: str = DEVICE,
    dtype: str = DTYPE,
    quiet: bool = QUIET,
) -> None:
    """Linear datamodeling score: retrain on random subsets, and rank-correlate each subset's summed scores with
    the retrained model's log p(completion), per query. On the demo by default; with --model BASE --corpus CORPUS
    --queries QUERIES on BASE fine-tuned on CORPUS (the explained model is that fine-tune on the whole corpus,
    trained and cached here)."""

    def action() -> None:
        from wherefrom.errors import WherefromError
        from wherefrom.faithfulness.problems import demo_problem, finetune_problem
        from wherefrom.faithfulness.providers import PROVIDERS
        from wherefrom.faithfulness.runner import LdsSettings
        from wherefrom.options import ExecutionOptions
        from wherefrom.synthetic.config import DemoConfig, reduced_config

        chosen = tuple(PROVIDERS) if methods == "all" else tuple(m.strip() for m in methods.split(",") if m.strip())
        settings = LdsSettings(models, fraction, seeds, chosen, damping_sweep, threads,
                               execution=ExecutionOptions(device=device, dtype=dtype))
        if model is None:
            if corpus is not None or queries is not None:
                raise WherefromError("--corpus and --queries go with --model BASE (the model that was fine-tuned); "
                                     "without --model the LDS is measured on the demo.")
            name = choice(config or "default", ("default", "reduced"), "--config")
            demo = reduced_config() if name == "reduced" else DemoConfig()
            problem = demo_problem(demo, name, None, threads, quiet, train=not dry_run)
        else:
            if config is not None or corpus is None or queries is None:
                raise WherefromError("--model BASE needs --corpus CORPUS and --queries QUERIES, and takes no "
                                     "--config (that chooses a demo).")
            options = FinetuneOptions(recipe, epochs, learning_rate, batch_size, warmup_fraction, seed, lora_rank,
                                      lora_alpha, lora_targets, max_length)
            problem = finetune_problem(model, corpus, queries, options, out)
        if dry_run:
            _print_cost(problem, settings, quiet)
        else:
            _run(problem, settings, out, quiet)

    run_action(action)


def _run(problem: object, settings: object, out: Path, quiet: bool) -> None:
    from rich.console import Console

    from wherefrom.faithfulness.report import terminal_table, write_report
    from wherefrom.faithfulness.runner import run_lds
    from wherefrom.folders import claim_output

    with claim_output(out, "lds"):
        report = run_lds(problem, settings, quiet)  # type: ignore[arg-type]
        paths = write_report(report, out)
    if not quiet:
        Console().print(terminal_table(report))
        err.print(f"written: {', '.join(str(p) for p in paths)}")


def _print_cost(problem: object, settings: object, quiet: bool) -> None:
    from contextlib import nullcontext

    from wherefrom.faithfulness.cost import estimate_cost

    with nullcontext() if quiet else err.status("timing one epoch of the recipe on a few sequences"):
        cost = estimate_cost(problem, settings)  # type: ignore[arg-type]
    typer.echo(f"retrainings to run: {cost.retrainings} ({cost.cached} cached), {cost.steps_per_retraining} "
               f"optimizer steps each; explained model: "
               f"{f'{cost.explained_steps} steps' if cost.explained_steps else 'trained'}\n"
               f"one step: {cost.seconds_per_step:.2f} s (mean of {cost.timed_steps} timed)\n"
               f"estimated training time: {cost.seconds / 60:.1f} min, plus fitting and scoring the explained model "
               "with each method (see `wherefrom fit --dry-run`)")
