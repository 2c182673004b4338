"""The terminal summary printed by the CLI: per query, a table of its most positively influential sequences."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from wherefrom.outputs._text import shorten
from wherefrom.scoring.results import ScoreResult

SNIPPET_WIDTH = 72
SIGN_AND_UNITS_SHORT = ("Score: nats of log p(completion | prompt) per N copies of the sequence added to training "
                        "(N = training sequences); positive raises it, negative lowers it")


def print_summary(result: ScoreResult, top_k: int = 5, console: Console | None = None) -> None:
    """Print one table per query: rank, score, record id and a snippet of each of its ``top_k`` sequences.

    Corpus and query texts are printed as plain text (never parsed as rich markup).
    """
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    console = console or Console()
    console.print(f"Influence of training sequences on {len(result.queries)} queries. {SIGN_AND_UNITS_SHORT}.")
    for query in result.queries:
        title = Text.assemble((f"{query.query_id}: ", "bold"), shorten(query.prompt, 60),
                              (shorten(query.completion, 40), "bold dark_orange"))
        caption = None
        if query.completion_logprob is not None:
            caption = f"log p(completion | prompt) = {query.completion_logprob:.4g} nats"
        table = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
        table.add_column("rank", justify="right", style="dim")
        table.add_column("score", justify="right")
        table.add_column("record id", overflow="fold")
        table.add_column("snippet", overflow="ellipsis", no_wrap=True, max_width=SNIPPET_WIDTH)
        for rank, row in enumerate(result.top(query.index, top_k), start=1):
            score, sequence = float(result.scores[query.index, row]), result.sequences[row]
            table.add_row(str(rank), Text(f"{score:+.4g}", style="dark_orange" if score > 0 else "blue"),
                          Text(sequence.record_id), Text(shorten(sequence.text, SNIPPET_WIDTH)))
        console.print(table)

