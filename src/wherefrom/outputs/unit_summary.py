"""The terminal view of `score --per-unit`: per query, the units that carry its influence and how concentrated it is."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from wherefrom.scoring.results import ScoreResult

SHOWN = 10


def concentration_text(result: ScoreResult, query: int) -> str:
    """'N of U units carry half of the influence' (or that no number of them does), in words."""
    units = result.units
    n = int(units.concentration[query])
    if n < 0:
        return f"no set of the {units.n_units} units carries half of the positive influence (they cancel)"
    return f"{n} of {units.n_units} units carry half of the positive influence"


def print_units(result: ScoreResult, console: Console | None = None) -> None:
    """One table per query: its top units by |influence| with their signed share."""
    console = console or Console()
    units = result.units
    for query in result.queries:
        table = Table(title=Text.assemble((f"{query.query_id}: ", "bold"), "which units carry it"),
                      caption=concentration_text(result, query.index), title_justify="left", caption_justify="left")
        table.add_column("unit", overflow="fold")
        table.add_column("share", justify="right")
        table.add_column("influence", justify="right")
        shares = units.shares(query.index).tolist()
        for k, unit in enumerate(units.ids[query.index].tolist()[:SHOWN]):
            value = float(units.influence[query.index, k])
            table.add_row(Text(units.names[unit]), Text(f"{shares[k]:+.1%}", style="dark_orange" if value > 0 else "blue"),
                          f"{value:+.4g}")
        console.print(table)
