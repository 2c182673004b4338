"""`wherefrom compare`: influence across model sizes and checkpoints (the study's scale finding)."""

from __future__ import annotations

from pathlib import Path

import typer

from wherefrom.cli.common import app, err, run_action


@app.command()
def compare(
    folders: list[Path] = typer.Argument(..., metavar="OUT_A OUT_B [OUT_C ...]",
                                         help="Score folders (`wherefrom score --out`) of two or more models or "
                                              "checkpoints, over the same corpus and the same queries."),
    top_k: int = typer.Option(10, "--top-k", help="k of the top-k measures (BM25 of the top, overlap, recall, "
                                                  "layer shares)."),
    truth: Path | None = typer.Option(None, help="TRUTH.jsonl in the `evaluate` format: adds recall@k of the "
                                                 "records that state each fact."),
    pairs: Path | None = typer.Option(None, help="Query pairs, one per line: 'ID_A ID_B [LANG_A LANG_B]' (the "
                                                 "same question in two languages or wordings; B the translation)."),
    languages: Path | None = typer.Option(None, help="A .jsonl of {\"id\", \"language\"} records (the corpus "
                                                     "will do); default: the corpus's own \"language\" fields."),
    json_path: Path | None = typer.Option(None, "--json", help="Also write every measure, per query, to this "
                                                                "JSON file."),
    html: Path | None = typer.Option(None, "--html", help="Also write the comparison as a self-contained HTML "
                                                          "report, one plot per measure."),
) -> None:
    """Compare influence across models or checkpoints: ranking agreement, surface overlap, layers, tails."""

    def action() -> None:
        from wherefrom.errors import WherefromError
        from wherefrom.fileio import atomic_write_text
        from wherefrom.folders import check_output_file
        from wherefrom.outputs.scale_report import check_report_path, write_scale_report
        from wherefrom.outputs.scale_table import print_comparison
        from wherefrom.scaling.compare import GENERATOR
        from wherefrom.scaling.compare import compare as run_compare

        if json_path is not None:
            if json_path.is_dir():
                raise WherefromError(f"--json {json_path} is a folder; give a file name, e.g. "
                                     f"{json_path / 'compare.json'}.")
            check_output_file(json_path, f'"generator": "{GENERATOR}"')
        if html is not None:
            check_report_path(html)
        comparison = run_compare(folders, top_k, truth, pairs, languages)
        print_comparison(comparison)
        if json_path is not None:
            atomic_write_text(json_path, comparison.to_json())
            err.print(f"per-query measures → [bold]{json_path}[/]")
        if html is not None:
            err.print(f"report → [bold]{write_scale_report(comparison, html)}[/]")

    run_action(action)
