"""`wherefrom analyse`: the paper's analyses of a score folder as a terminal table (the report shows the same)."""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table
from rich.text import Text

from wherefrom.outputs._text import shorten
from wherefrom.outputs.sections import QuerySection


def print_analyses(sections: list[QuerySection], console: Console | None = None) -> None:
    """One row per query: tail exponent and fit quality, concentration, spurious sequences, memorisation."""
    console = console or Console()
    table = Table(title="Analyses per query (Grosse et al. 2023, sec. 5)", title_justify="left")
    for column in ("query", "completion", "α (tail)", "x_min", "p (fit)", "vs exponential", "top-1% share",
                   "spurious in top", "verbatim in corpus", "longest shared span"):
        left = column in ("query", "completion", "longest shared span")
        table.add_column(column, justify="left" if left else "right")
    for section in sections:
        fit, memo = section.tail.fit, section.memorisation
        comparison = "–"
        if fit is not None and not math.isnan(fit.loglik_ratio_p):
            winner = "power law" if fit.loglik_ratio > 0 else "exponential"
            comparison = f"{winner} (p={fit.loglik_ratio_p:.2g})"
        table.add_row(
            Text(section.query.query_id),
            Text(shorten(section.query.completion, 30)),
            "–" if fit is None else f"{fit.alpha:.2f}",
            "–" if fit is None else f"{fit.x_min:.3g}",
            "–" if fit is None or math.isnan(fit.p_value) else f"{fit.p_value:.2f}",
            comparison,
            "–" if section.tail.top_share is None else f"{section.tail.top_share:.0%}",
            "–" if section.spurious_count is None else f"{section.spurious_count}/{len(section.top)}",
            str(len(memo.verbatim_records)) if memo is not None else "–",
            Text("–" if memo is None else f"{memo.longest_length} chars: {shorten(memo.longest_span, 24)!r}"),
        )
    console.print(table)
    console.print("[dim]α: exponent of the power-law density fitted to the upper tail of positive scores "
                  "(p: bootstrap goodness of fit; high p = plausible); spurious: per-token influence with "
                  "‖a‖₂/‖a‖₁ > 2/3 and more concentrated than 99% of same-length sets of the query's split tokens; "
                  "memorisation lengths are in characters.[/]")
