"""`wherefrom evaluate`: recall@k and MRR of score folders (and BM25) against a truth file."""

from __future__ import annotations

from pathlib import Path

import typer

from wherefrom.cli.common import app, err, run_action


@app.command()
def evaluate(
    scores: list[Path] = typer.Option(..., "--scores", help="A folder written by `wherefrom score` (repeat for "
                                                            "several); a normalised one counts as two methods."),
    truth: Path = typer.Option(..., help="TRUTH.jsonl: one {\"query_id\", \"record_ids\": [...], \"group\" "
                                         "(optional)} per line: the corpus records each query should find."),
    k: list[int] = typer.Option([1, 5, 10, 50], "--k", help="Cut-offs of recall@k (repeat for several)."),
    json_path: Path | None = typer.Option(None, "--json", help="Also write every method's means, per-group "
                                                                "means and per-query ranks to this JSON file."),
) -> None:
    """Recall@k and MRR of every ranking in the score folders, and of BM25 over the same corpus (the baseline)."""

    def action() -> None:
        from wherefrom.analysis.fact_tracing import evaluate_folders, method_names, read_truth
        from wherefrom.errors import WherefromError
        from wherefrom.fileio import atomic_write_text
        from wherefrom.folders import check_output_file
        from wherefrom.outputs.evaluation_table import EVALUATION_GENERATOR, evaluation_json, print_evaluation

        if json_path is not None:  # checked before the work: never replace a file wherefrom's evaluate did not write
            if json_path.is_dir():
                raise WherefromError(f"--json {json_path} is a folder; give a file name, e.g. {json_path / 'evaluation.json'}.")
            check_output_file(json_path, f'"generator": "{EVALUATION_GENERATOR}"')
        evaluations = evaluate_folders(method_names(scores), read_truth(truth), sorted(set(k)))
        print_evaluation(evaluations)
        if json_path is not None:
            atomic_write_text(json_path, evaluation_json(evaluations))
            err.print(f"per-query ranks → [bold]{json_path}[/]")

    run_action(action)
