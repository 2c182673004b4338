"""A readable terminal summary of a score result: the top sequences per query, with sign and units."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from wherefrom.scoring.results import ScoreResult


def print_summary(result: ScoreResult, top_k: int = 5, console: Console | None = None) -> None:
    """Print, per query, its completion's log-probability and its ``top_k`` most influential sequences."""
    console = console or Console()
    for query in result.queries:
        logprob = "" if query.completion_logprob is None else f"  log p = {query.completion_logprob:.2f} nats"
        table = Table(title=f"[bold]{query.query_id}[/]: {query.prompt!r} → {query.completion!r}{logprob}",
                      title_justify="left", show_lines=False)
        table.add_column("#", justify="right")
        table.add_column("influence", justify="right")
        table.add_column("record")
        table.add_column("text", overflow="ellipsis", no_wrap=True, max_width=72)
        for rank, row in enumerate(result.top(query.index, top_k), start=1):
            value = float(result.scores[query.index, row])
            colour = "dark_orange" if value >= 0 else "blue"
            sequence = result.sequences[row]
            table.add_row(str(rank), f"[{colour}]{value:+.4g}[/]", sequence.record_id,
                          sequence.text.replace("\n", " ⏎ "))
        console.print(table)
    console.print("[dim]influence > 0: training on the sequence raises log p(completion | prompt); "
                  "units: nats per N copies of the sequence (N = training sequences).[/]")
