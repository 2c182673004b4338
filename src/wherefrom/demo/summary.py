"""The demo's closing table: does each strategy find the documents that taught the model its answers?"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from wherefrom.demo.pipeline import RECALL_K, DemoSummary


def print_demo_summary(summary: DemoSummary, console: Console | None = None) -> None:
    """Per query kind: model accuracy and recall@10 of the carrier documents per method; then where the report is."""
    console = console or Console()
    strategies = list(summary.recall)
    table = Table(title=f"Recall@{RECALL_K} of the documents that state each query's fact, per method "
                        "(`wherefrom evaluate`; cosine: --normalize)", title_justify="left")
    table.add_column("query kind")
    table.add_column("queries", justify="right")
    table.add_column("model correct", justify="right")
    for strategy in strategies:
        table.add_column(strategy, justify="right")
    by_kind = {s: {r.kind: r for r in summary.recall[s]} for s in strategies}
    for kind, first in by_kind[strategies[0]].items():
        accuracy = summary.accuracy.get(kind)
        cells = [f"{by_kind[s][kind].recall:.2f}" if kind in by_kind[s] else "–" for s in strategies]
        table.add_row(kind, str(first.queries), "–" if accuracy is None else f"{accuracy:.0%}", *cells)
    console.print(table)
    if summary.neurons:
        console.print(f"Which neurons carry the facts: {summary.neurons}")
    if summary.experts:
        console.print(f"Which experts carry the facts: {summary.experts}")
    timings = ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in summary.seconds.items())
    console.print(f"[dim]{timings}[/]")
    console.print(f"report: [bold]{summary.report}[/]")
    console.print(f"ask your own questions: [bold]wherefrom serve --demo {Path(summary.report).parent}[/] "
                  "(a page on 127.0.0.1 that answers from the demo's gradient index)")
