"""The HTML report: one self-contained file (styles, script and plots inline; no server, no network).

Every text from the corpus or the queries goes through Jinja2's autoescaping, and the page's Content Security
Policy only allows its own inline script (by hash), so a document holding HTML or ``<script>`` shows as text and
runs nothing.
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
from importlib.resources import files
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from wherefrom.errors import WherefromError
from wherefrom.fileio import atomic_write_text
from wherefrom.folders import check_output_file
from wherefrom.outputs._text import shorten
from wherefrom.outputs.comparison import compare_queries
from wherefrom.outputs.lds_section import LdsSection
from wherefrom.outputs.scale_section import ScaleSection
from wherefrom.outputs.sections import NOTABLE_SHARED_CHARS, query_sections
from wherefrom.outputs.unit_data import unit_data
from wherefrom.scoring.results import ScoreResult
from wherefrom.version import __version__

GENERATOR = '<meta name="generator" content="wherefrom'  # in every report's head: a file wherefrom may replace


def write_report(result: ScoreResult, path: str | os.PathLike[str], top_k: int = 10, title: str | None = None,
                 *, n_bootstrap: int = 100, lds: LdsSection | None = None, scale: ScaleSection | None = None) -> Path:
    """Write the HTML report of ``result`` to ``path`` (a file; parent folders are created) and return its path.

    Per query it shows the ``top_k`` most positively influential sequences (with token heatmaps when per-token
    scores exist), the layer heatmap (with per-layer scores), the power-law fit of the score tail (goodness of fit
    from ``n_bootstrap`` synthetic sets; 0 skips it), spurious flags and the memorisation check; ``lds`` adds the
    section of an LDS folder (`wherefrom validate lds`), ``scale`` the comparison across models (`compare`).
    """
    n_queries, n_sequences = result.scores.shape
    if n_queries == 0 or n_sequences == 0:
        raise WherefromError(
            f"the result holds {n_queries} queries and {n_sequences} sequences; a report needs at least one of "
            "each: score a non-empty query file against a non-empty corpus"
        )
    out = Path(path)
    if out.is_dir():
        raise WherefromError(f"{out} is a folder; pass the path of the HTML file to write, e.g. {out / 'report.html'}")
    check_output_file(out, GENERATOR)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, _render(result, top_k, title, n_bootstrap, lds, scale))
    return out


def _render(result: ScoreResult, top_k: int, title: str | None, n_bootstrap: int,
            lds: LdsSection | None = None, scale: ScaleSection | None = None) -> str:
    """The report of ``result`` as one HTML string (see :func:`write_report`)."""
    script = _static("report.js")
    metadata = result.metadata
    return _environment().get_template("report.html.j2").render(
        title=title or f"wherefrom report: {metadata.get('model', 'influence of training sequences')}",
        metadata=metadata,
        n_training=metadata.get("n_training_sequences_fitted", len(result.sequences)),
        n_sequences=len(result.sequences),
        ranked_by=result.ranked_by,
        layer_names=result.layer_names,
        top_k=top_k,
        sections=query_sections(result, top_k, n_bootstrap),
        comparison=compare_queries(result),
        lds=lds,
        scale=scale,
        notable_shared=NOTABLE_SHARED_CHARS,
        style=_static("report.css"),
        script=script,
        script_hash=base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii"),
        version=__version__,
    )


def _environment() -> Environment:
    environment = Environment(
        loader=PackageLoader("wherefrom.outputs", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(number=_number, signed=_signed, percent=_percent, short=shorten, opacity=_opacity,
                               unit_data=lambda panel: unit_data(panel, _signed))
    environment.policies["json.dumps_kwargs"] = {"separators": (",", ":"), "ensure_ascii": False}  # compact data
    environment.tests["nan"] = lambda value: isinstance(value, float) and math.isnan(value)
    return environment


def _static(name: str) -> str:
    return (files("wherefrom.outputs") / "static" / name).read_text(encoding="utf-8")


def _number(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "—"
    return "n/a" if math.isnan(value) else f"{value:.{digits}g}"


def _signed(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "—"
    return "n/a" if math.isnan(value) else f"{value:+.{digits}g}"


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _opacity(value: float) -> str:
    """A token colour's opacity as a short CSS number (.42)."""
    return f"{value:.3f}".removeprefix("0")

