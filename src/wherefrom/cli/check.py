"""`wherefrom check`: is EK-FAC trustworthy on this model and corpus? (EK-FAC against an iterative solver.)"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from wherefrom.cli.common import DEVICE, DTYPE, QUIET, app, choice, run_action
from wherefrom.options import ExecutionOptions, default_of, help_of
from wherefrom.solvers.trust import CheckOptions, TrustReport


def check_opt(name: str, *flags: str) -> object:
    return typer.Option(default_of(CheckOptions, name), *flags, help=help_of(CheckOptions, name))


@app.command()
def check(
    run: Path = typer.Option(..., "--run", "--run-dir", help="Run folder written by `wherefrom fit`."),
    corpus: Path | None = typer.Option(None, help="Corpus to sample the Gauss-Newton Hessian (and default queries) "
                                                  "from (default: the corpus the run was fitted on)."),
    queries: Path | None = typer.Option(None, help="Queries .jsonl whose gradients are solved (default: "
                                                   "--n-queries corpus sequences' own gradients)."),
    solver: str = check_opt("solver"),
    iterations: int = check_opt("iterations"),
    sample: int = check_opt("sample"),
    n_queries: int = check_opt("n_queries", "--n-queries"),
    damping: float | None = check_opt("damping"),
    device: str = DEVICE,
    dtype: str = DTYPE,
    quiet: bool = QUIET,
) -> None:
    """Measure how far EK-FAC's inverse-Hessian-vector products are from an iterative solver's, per layer."""

    def action() -> None:
        from wherefrom.solvers.check_run import check_run

        options = CheckOptions(solver=choice(solver, ("cg", "lissa"), "--solver"), iterations=iterations,
                               sample=sample, n_queries=n_queries, damping=damping)
        print_report(check_run(run, corpus, queries, options, quiet, ExecutionOptions(device=device, dtype=dtype)))

    run_action(action)


def print_report(report: TrustReport, console: Console | None = None) -> None:
    """The per-layer table and the verdict in words."""
    console = console or Console()
    table = Table(title=f"EK-FAC against {report.solver.upper()} ({report.iterations} iterations) on the damped "
                        "block-diagonal Gauss-Newton Hessian")
    for column in ("layer", "cosine", "relative error", "solver residual"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for a in [*report.layers, report.overall]:
        table.add_row(a.name, f"{a.cosine:.3f}", f"{a.relative_error:.3f}", f"{a.residual:.2g}",
                      style="bold" if a is report.overall else None)
    console.print(table)
    console.print(f"[bold]verdict: {report.verdict}[/] — {report.explanation}", highlight=False)
