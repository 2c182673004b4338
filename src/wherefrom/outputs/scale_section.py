"""The comparison's section of an HTML report: its tables, findings and one plot per measure.

One template (``scale_section.html.j2``) renders it, both inside the report of a score folder (`wherefrom report
--compare`, `demo --sizes`) and as the standalone page of `wherefrom compare --html`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from wherefrom.errors import WherefromError
from wherefrom.outputs.scale_plots import measure_plot
from wherefrom.scaling.compare import INTERVAL, ScaleComparison
from wherefrom.scaling.measures import BETWEEN, MEASURES
from wherefrom.scaling.stored import read_comparison
from wherefrom.scoring.results import ScoreResult


@dataclass(frozen=True)
class Panel:
    """One plot of the section: a measure against the models' size or step."""

    name: str
    title: str
    plot: str


@dataclass(frozen=True)
class ScaleSection:
    """What the section shows: the comparison, the sentences stating its findings, and its plots."""

    comparison: ScaleComparison
    notes: list[str]
    panels: list[Panel]

    @property
    def interval(self) -> str:
        """What the intervals are."""
        return INTERVAL

    @property
    def between(self) -> dict[str, str]:
        """The measures of agreement between two models: name → label."""
        return BETWEEN


def scale_section(comparison: ScaleComparison, notes: Sequence[str] = ()) -> ScaleSection:
    """The section of ``comparison``; ``notes``: sentences shown as its findings."""
    return ScaleSection(comparison, list(notes), panels(comparison))


def read_scale_section(path: str | os.PathLike[str], result: ScoreResult) -> ScaleSection:
    """The section of the comparison stored in ``path`` (with its findings), for the report of ``result``: refused
    in one line unless it compared the queries ``result`` scored."""
    comparison, findings = read_comparison(path)
    scored = [q.query_id for q in result.queries]
    if not set(comparison.query_ids) <= set(scored):
        missing = sorted(set(comparison.query_ids) - set(scored))
        raise WherefromError(f"{path} compares query {missing[0]!r}, which this score folder did not score "
                             f"({len(missing)} such); give the comparison of folders that scored these queries.")
    return scale_section(comparison, findings)


def panels(comparison: ScaleComparison) -> list[Panel]:
    """One plot per measure held, then each model's agreement with the last one (the largest or latest)."""
    folders = comparison.folders
    positions = [comparison.position(f) for f in folders]
    labels = [f.label for f in folders]
    k = comparison.k
    result = [Panel(name, label.replace("top-k", f"top-{k}").replace("@k", f"@{k}"),
                    measure_plot(positions, [f.intervals[name] for f in folders], labels, comparison.axis, y_label))
              for name, (label, y_label) in MEASURES.items() if name in folders[0].values]
    last = folders[-1].label
    with_last = [a for a in comparison.agreements if a.second == last]
    others = [f for f in folders if f.label != last]
    for name, label in BETWEEN.items():
        title = f"{label.replace('top-k', f'top-{k}')} with {last}"
        result.append(Panel(f"agreement_{name}", title, measure_plot(
            [comparison.position(f) for f in others], [a.intervals[name] for a in with_last],
            [f.label for f in others], comparison.axis, label)))
    return result
