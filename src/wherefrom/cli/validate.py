"""`wherefrom validate`: checks of how faithful influence scores are; `validate lds` measures the linear
datamodeling score on the demo."""

from __future__ import annotations

from pathlib import Path

import typer

from wherefrom.cli.common import DEVICE, DTYPE, QUIET, app, choice, err, run_action

validate_app = typer.Typer(help="Check how faithfully influence scores predict retraining.", no_args_is_help=True)
app.add_typer(validate_app, name="validate")


@validate_app.command()
def lds(
    models: int = typer.Option(32, "--models", help="Subsets of the corpus, each with its retrained model(s)."),
    fraction: float = typer.Option(0.5, help="Share of the corpus's documents in each subset."),
    seeds: int = typer.Option(1, help="Training seeds per subset; the measured log p is their mean."),
    methods: str = typer.Option("all", help="Comma-separated methods to compare, or 'all'."),
    damping_sweep: bool = typer.Option(False, "--damping-sweep",
                                       help="Also score EK-FAC at absolute λ = 1e-6 … 10 × the mean eigenvalue."),
    config: str = typer.Option("default", help="'default' (the demo model) or 'reduced' (tiny, seconds)."),
    out: Path = typer.Option(Path("wherefrom-lds"), help="Folder for lds.json, lds.md and lds.png."),
    threads: int = typer.Option(2, help="CPU threads for retraining and scoring."),
    device: str = DEVICE,
    dtype: str = DTYPE,
    quiet: bool = QUIET,
) -> None:
    """Linear datamodeling score on the demo: retrain on random subsets, and rank-correlate each subset's summed
    scores with the retrained model's log p(completion), per query."""

    def action() -> None:
        from rich.console import Console

        from wherefrom.faithfulness.providers import PROVIDERS
        from wherefrom.faithfulness.report import terminal_table, write_report
        from wherefrom.faithfulness.runner import LdsSettings, run_lds
        from wherefrom.folders import claim_output
        from wherefrom.synthetic.config import DemoConfig, reduced_config

        name = choice(config, ("default", "reduced"), "--config")
        chosen = tuple(PROVIDERS) if methods == "all" else tuple(m.strip() for m in methods.split(",") if m.strip())
        from wherefrom.options import ExecutionOptions

        settings = LdsSettings(reduced_config() if name == "reduced" else DemoConfig(), name, models, fraction,
                               seeds, chosen, damping_sweep, threads,
                               execution=ExecutionOptions(device=device, dtype=dtype))
        with claim_output(out, "lds"):
            report = run_lds(settings, quiet)
            paths = write_report(report, out)
        if not quiet:
            Console().print(terminal_table(report))
            err.print(f"written: {', '.join(str(p) for p in paths)}")

    run_action(action)
