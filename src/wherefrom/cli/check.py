"""`wherefrom check`: is EK-FAC trustworthy on this model and corpus? (EK-FAC against an iterative solver.)"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from wherefrom.cli.common import DEVICE, DTYPE, QUIET, app, choice, print_dry_run, run_action
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
    tolerance: float = check_opt("tolerance"),
    budget: float | None = check_opt("budget"),
    layers: int = check_opt("layers"),
    sample: int = check_opt("sample"),
    n_queries: int = check_opt("n_queries", "--n-queries"),
    damping: float | None = check_opt("damping"),
    device: str = DEVICE,
    dtype: str = DTYPE,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the expected time (one Gauss-Newton product timed "
                                                          "on a batch of the sample) and memory, and check nothing."),
    quiet: bool = QUIET,
) -> None:
    """Measure how far EK-FAC's inverse-Hessian-vector products are from an iterative solver's, per layer."""

    def action() -> None:
        from wherefrom.costs.check_plan import estimate_check
        from wherefrom.solvers.check_run import check_run

        options = CheckOptions(solver=choice(solver, ("cg", "lissa"), "--solver"), iterations=iterations,
                               tolerance=tolerance, budget=budget, layers=layers, sample=sample, n_queries=n_queries,
                               damping=damping)
        execution = ExecutionOptions(device=device, dtype=dtype)
        if dry_run:
            print_dry_run(lambda: estimate_check(run, corpus, queries, options, execution), quiet)
        else:
            print_report(check_run(run, corpus, queries, options, quiet, execution))

    run_action(action)


def print_report(report: TrustReport, console: Console | None = None) -> None:
    """The per-layer table and the verdict in words."""
    console = console or Console()
    solver = "CG" if report.solver == "cg" else "LiSSA"
    checked = "" if len(report.layers) == report.tracked else f", {len(report.layers)} of {report.tracked} layers"
    on = "curvature refitted on the sample" if report.refitted else "the run's curvature, G on its whole corpus"
    table = Table(title=f"EK-FAC against {solver} ({report.iterations} iterations, {report.seconds:.0f} s{checked}) "
                        f"on the damped block-diagonal Gauss-Newton Hessian ({on})")
    columns = ("layer", "energy cosine", "cosine", "relative error", "solver error", "verdict")
    for column in columns:
        table.add_column(column, justify="left" if column in ("layer", "verdict") else "right")
    for a in [*report.layers, report.overall]:
        table.add_row(a.name, f"{a.energy_cosine:.3f}", f"{a.cosine:.3f}", f"{a.relative_error:.3f}",
                      f"{a.solver_error:.2g}", a.verdict, style="bold" if a is report.overall else None)
    console.print(table)
    console.print(f"[dim]{solver} {report.stopped}. Energy cosine: cos_A(EK-FAC, exact), A = G + λI (it predicts the "
                  "agreement of the influence scores); cosine and relative error: Euclidean, against the solver's "
                  "current x.[/]", highlight=False)
    console.print(f"[bold]verdict: {report.verdict}[/] — {report.explanation}", highlight=False)
