"""`wherefrom report` and `wherefrom analyse`: read a score folder."""

from __future__ import annotations

from pathlib import Path

import typer

from wherefrom.cli.common import app, err, run_action


@app.command()
def report(
    out: Path = typer.Argument(..., help="Folder written by `wherefrom score` (or by `wherefrom validate lds`: the "
                                         "report of its EK-FAC scores, with an LDS section)."),
    output: Path = typer.Option(Path("report.html"), "--output", "-o", help="HTML file to write."),
    top_k: int = typer.Option(10, "--top-k", help="Sequences shown per query."),
    title: str | None = typer.Option(None, help="Title of the page."),
    bootstraps: int = typer.Option(100, help="Bootstrap samples for the power-law tail's goodness-of-fit p-value."),
    compare: Path | None = typer.Option(None, "--compare", help="A comparison JSON (`wherefrom compare --json`, or "
                                                                "compare.json of `demo --sizes`) of models that "
                                                                "scored these queries: adds its section."),
) -> None:
    """Write a self-contained HTML report (token heatmaps, layer heatmap, tail statistics) of a score folder."""

    def action() -> None:
        from wherefrom.errors import WherefromError
        from wherefrom.outputs.lds_section import read_lds
        from wherefrom.outputs.report import write_report
        from wherefrom.outputs.scale_section import read_scale_section
        from wherefrom.scoring.results import ScoreResult

        lds = read_lds(out)
        if lds is not None and lds.scores is None:
            raise WherefromError(f"{out} holds an LDS result without EK-FAC scores; run `wherefrom validate lds` "
                                 "with ekfac among --methods.")
        result = ScoreResult.load(lds.scores if lds else out)
        scale = None if compare is None else read_scale_section(compare, result)
        path = write_report(result, output, top_k=top_k, title=title, n_bootstrap=bootstraps, lds=lds, scale=scale)
        err.print(f"report → [bold]{path}[/]")

    run_action(action)


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

        print_analyses(query_sections(ScoreResult.load(out), top_k, bootstraps))

    run_action(action)
