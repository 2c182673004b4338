"""The comparison as a self-contained HTML report (styles and SVG plots inline, no script, no network)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from wherefrom.errors import WherefromError
from wherefrom.fileio import atomic_write_text
from wherefrom.folders import check_output_file
from wherefrom.outputs.report import GENERATOR, _environment, _static
from wherefrom.outputs.scale_plots import measure_plot
from wherefrom.scaling.compare import INTERVAL, ScaleComparison
from wherefrom.scaling.measures import BETWEEN, MEASURES
from wherefrom.version import __version__


@dataclass(frozen=True)
class Panel:
    """One plot of the section: a measure against the models' size or step."""

    name: str
    title: str
    plot: str


def check_report_path(path: str | os.PathLike[str]) -> Path:
    """Refuse a folder, or a file wherefrom did not write."""
    out = Path(path)
    if out.is_dir():
        raise WherefromError(f"{out} is a folder; pass the path of the HTML file to write, e.g. {out / 'compare.html'}")
    check_output_file(out, GENERATOR)
    return out


def write_scale_report(comparison: ScaleComparison, path: str | os.PathLike[str], notes: Sequence[str] = (),
                       title: str = "wherefrom: influence across models") -> Path:
    """Write the comparison's report to ``path`` and return it; ``notes``: sentences shown as its findings."""
    out = check_report_path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, _environment().get_template("scale.html.j2").render(
        title=title, comparison=comparison, notes=list(notes), panels=panels(comparison),
        interval=INTERVAL, measures=MEASURES, between=BETWEEN, style=_static("report.css"), version=__version__))
    return out


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
