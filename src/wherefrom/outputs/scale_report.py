"""The comparison as a self-contained HTML page (styles and SVG plots inline, no script, no network): the report's
comparison section (:mod:`wherefrom.outputs.scale_section`) on a page of its own."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from wherefrom.errors import WherefromError
from wherefrom.fileio import atomic_write_text
from wherefrom.folders import check_output_file
from wherefrom.outputs.report import GENERATOR, _environment, _static
from wherefrom.outputs.scale_section import scale_section
from wherefrom.scaling.compare import ScaleComparison
from wherefrom.version import __version__


def check_report_path(path: str | os.PathLike[str]) -> Path:
    """Refuse a folder, or a file wherefrom did not write."""
    out = Path(path)
    if out.is_dir():
        raise WherefromError(f"{out} is a folder; pass the path of the HTML file to write, e.g. {out / 'compare.html'}")
    check_output_file(out, GENERATOR)
    return out


def write_scale_report(comparison: ScaleComparison, path: str | os.PathLike[str], notes: Sequence[str] = (),
                       title: str = "wherefrom: influence across models") -> Path:
    """Write the comparison's page to ``path`` and return it; ``notes``: sentences shown as its findings."""
    out = check_report_path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, _environment().get_template("scale.html.j2").render(
        title=title, scale=scale_section(comparison, notes), style=_static("report.css"), version=__version__))
    return out
