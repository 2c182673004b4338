"""`wherefrom compare`'s terminal output: one row per measure, one column per model, mean [interval]."""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table

from wherefrom.analysis.intervals import LEVEL, Interval
from wherefrom.scaling.compare import ScaleComparison
from wherefrom.scaling.measures import BETWEEN, MEASURES


def print_comparison(comparison: ScaleComparison, console: Console | None = None) -> None:
    """The measures of every model, then the agreement of every pair of models."""
    console = console or Console()
    k = comparison.k
    table = Table(title=f"Influence across models ({len(comparison.query_ids)} queries, top-{k}): mean "
                        f"[{LEVEL:.0%} t-interval over queries]", title_justify="left")
    table.add_column("measure")
    for folder in comparison.folders:
        table.add_column(f"{folder.label}\n{_where(comparison, folder)}", justify="right")
    for name, (label, _) in MEASURES.items():
        if name in comparison.folders[0].values:
            table.add_row(label.replace("top-k", f"top-{k}").replace("@k", f"@{k}"),
                          *(_cell(f.intervals[name]) for f in comparison.folders))
    console.print(table)
    agreement = Table(title="Agreement between models (per query, over all sequences)", title_justify="left")
    agreement.add_column("models")
    for name, label in BETWEEN.items():
        agreement.add_column(label.replace("top-k", f"top-{k}"), justify="right")
    for a in comparison.agreements:
        agreement.add_row(f"{a.first} ~ {a.second}", *(_cell(a.intervals[name]) for name in BETWEEN))
    console.print(agreement)


def _where(comparison: ScaleComparison, folder: object) -> str:
    if comparison.axis == "parameters":
        return f"{folder.parameters:,} params"  # type: ignore[attr-defined]
    if comparison.axis == "training step":
        return f"step {folder.step:,}"  # type: ignore[attr-defined]
    return ""


def _cell(interval: Interval) -> str:
    if math.isnan(interval.mean):
        return "n/a"
    if math.isnan(interval.low):
        return f"{interval.mean:.3g}"
    return f"{interval.mean:.3g} [{interval.low:.3g}, {interval.high:.3g}]"
