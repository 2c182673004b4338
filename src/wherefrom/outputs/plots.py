"""Plots of the report, drawn with matplotlib (no pyplot, no display) and embedded as SVG data URIs.

An SVG inside an ``<img>`` element never runs scripts, so labels taken from the corpus (record ids) stay inert.
The SVGs are written compactly: text as text (not glyph outlines), coordinates to a tenth of a point, the points
of a scatter as one path of dots, at most one per spot they would cover on the figure, and the report's plots
percent-encoded rather than in base64 (a quarter smaller); none of them holds a character that HTML would escape.
"""

from __future__ import annotations

import base64
import io
import math
import re
from urllib.parse import quote

import numpy as np
from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure
from matplotlib.patches import PathPatch
from matplotlib.path import Path
from matplotlib.ticker import FuncFormatter, NullFormatter

from wherefrom.outputs.figures import DIVERGING_RGB, Layers, Tail
from wherefrom.outputs.tokens import POSITIVE_RGB

_SPOTS = (600, 400)  # a scatter keeps one point per 1/600 of its x range and 1/400 of its y range (log axes)
_COORDINATES = re.compile(r' (?:d|x|y|x1|x2|y1|y2|width|height)="[^"]*"')  # attributes holding coordinates only
_GROUP_IDS = re.compile(r'<g id="[^"]*"')  # nothing refers to a group (references go to defs and clip paths)
_BETWEEN_ELEMENTS = re.compile(r">\s+<")
_USE = re.compile(r'(<use xlink:href="#([^"]+)"[^>]*?) style="([^"]*)"')  # a marker (tick, dot) placed once
_DEFINITION = re.compile(r'(<path id="([^"]+)"[^>]*?) style="([^"]*)"')
_URI_SAFE = " /:;=,.-_()!*~+@?$[]{}|^`"  # kept as they are in a percent-encoded SVG (never & < > " ' # % or a newline)
_TAIL_MARGINS = {"left": 0.18, "right": 0.97, "bottom": 0.165, "top": 0.96}  # what tight_layout finds for its
# fixed labels, without laying them out twice (measured: the plot then draws in 0.125 s of CPU instead of 0.2)
_SUPERSCRIPTS = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
_NUMBER = re.compile(r"-?\d+\.\d+(?:e[-+]?\d+)?")
_STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#555",
    "axes.labelcolor": "#222",
    "xtick.color": "#444",
    "ytick.color": "#444",
    "svg.fonttype": "none",  # text as <text>, drawn with the page's fonts (DejaVu Sans where installed)
    "svg.hashsalt": "wherefrom",  # stable element ids: the same result gives the same file
}
DIVERGING = LinearSegmentedColormap.from_list(
    "wherefrom_diverging", [tuple(c / 255 for c in rgb) for rgb in DIVERGING_RGB])


def tail_plot(tail: Tail) -> str:
    """Log-log 1 - CDF of the positive scores, with the fitted power law over its tail when there is a fit."""
    with rc_context(_STYLE):
        figure = Figure(figsize=(5.2, 3.4))
        axes = figure.add_subplot()
        _dots(axes, tail.x, tail.survival, "#555", "positive scores")
        if tail.fit is not None and tail.fit_line is not None:
            (x_min, top), (largest, bottom) = tail.fit_line
            axes.loglog([x_min, largest], [top, bottom], color=_hex(POSITIVE_RGB), linewidth=2,
                        label=f"power law, alpha = {tail.fit.alpha:.3g}")
            axes.axvline(x_min, color="#999", linestyle="--", linewidth=1, label=f"x_min = {x_min:.3g}")
        axes.set_xlabel("influence (nats per N copies)")
        axes.set_ylabel("1 - CDF  (share of positive scores >= x)")
        axes.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks collide on a short log range
        for axis in (axes.xaxis, axes.yaxis):  # plain text: laying out mathtext labels took most of the plot's time
            axis.set_major_formatter(FuncFormatter(_power_of_ten))
        axes.legend(frameon=False, loc="lower left")  # a falling CCDF leaves that corner empty
        figure.subplots_adjust(**_TAIL_MARGINS)
        return _svg_uri(figure)


def layer_heatmap_plot(layers: Layers) -> str:
    """Blocks (rows, lowest layers at the bottom) x sequences (columns, by centre of mass), diverging at 0."""
    matrix = layers.heatmap.matrix
    n_blocks, n_columns = matrix.shape
    with rc_context(_STYLE):
        figure = Figure(figsize=(min(max(4.0, 0.42 * n_columns + 2.2), 9.0), max(2.4, 0.19 * n_blocks + 1.7)))
        axes = figure.add_subplot()
        image = axes.imshow(matrix, cmap=DIVERGING, vmin=-layers.limit, vmax=layers.limit, origin="lower",
                            aspect="auto", interpolation="nearest")
        axes.set_xticks(range(n_columns), layers.labels, rotation=45, ha="right", rotation_mode="anchor")
        axes.set_yticks(range(n_blocks), layers.block_labels)
        axes.set_xlabel("top sequences, ordered by centre of mass (lower layers first)")
        axes.tick_params(length=0)
        for spine in axes.spines.values():
            spine.set_visible(False)
        figure.colorbar(image, ax=axes, label="nats per N copies", fraction=0.05, pad=0.03)
        figure.tight_layout()
        return _svg_uri(figure)


def _dots(axes: Axes, x: np.ndarray, y: np.ndarray, colour: str, label: str) -> None:
    """Points (x, y) on log-log axes as one path of round dots (a marker per point would repeat its style in the
    SVG), keeping one point per spot of the figure; a legend entry drawn as the usual marker."""
    axes.loglog(x, y, linestyle="none")  # sets the log scales and the data limits; draws nothing
    logs = np.column_stack([np.log10(x), np.log10(y)])
    spans = np.ptp(logs, axis=0)
    spans[spans == 0.0] = 1.0
    spots = np.round((logs - logs.min(axis=0)) / spans * np.array(_SPOTS))
    _, first = np.unique(spots, axis=0, return_index=True)
    points = np.column_stack([x, y])[np.sort(first)]
    path = Path(np.repeat(points, 2, axis=0), np.tile([Path.MOVETO, Path.LINETO], len(points)))
    path.should_simplify = False  # its segments have length 0: simplification would drop them
    axes.add_patch(PathPatch(path, facecolor="none", edgecolor=colour, linewidth=2.4, capstyle="round"))
    axes.plot([], [], ".", color=colour, markersize=3, label=label)


def _power_of_ten(value: float, _position: int) -> str:
    """A log axis's major tick as text: 10 with a Unicode exponent for a power of ten, else the number."""
    exponent = math.log10(value) if value > 0 else math.nan
    if math.isfinite(exponent) and abs(exponent - round(exponent)) < 1e-9:
        return "10" + str(round(exponent)).translate(_SUPERSCRIPTS)
    return f"{value:g}"


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#" + "".join(f"{c:02x}" for c in rgb)


def _svg_uri(figure: Figure) -> str:
    """The figure as a percent-encoded SVG data URI."""
    return "data:image/svg+xml," + quote(_svg(figure), safe=_URI_SAFE)


def _svg_data_uri(figure: Figure) -> str:
    """The figure as a base64 SVG data URI."""
    return "data:image/svg+xml;base64," + base64.b64encode(_svg(figure).encode("utf-8")).decode("ascii")


def _svg(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    return compact_svg(buffer.getvalue().decode("utf-8"))


def compact_svg(svg: str) -> str:
    """``svg`` with its coordinates to a tenth of a point, no line breaks inside its paths or between its elements,
    no ids on its groups, and the style that every placement of a marker repeats written once, on the marker."""
    svg = _hoist_marker_styles(_GROUP_IDS.sub("<g", _BETWEEN_ELEMENTS.sub("><", svg)))
    return _COORDINATES.sub(lambda m: _NUMBER.sub(lambda n: f"{round(float(n.group(0)), 1):g}",
                                                  " " + " ".join(m.group(0).split())), svg)


def _hoist_marker_styles(svg: str) -> str:
    """Move the style of a marker's placements (``<use>``) onto its definition when all its placements share it.

    A placement's style only reaches the marker's properties that its definition leaves unset, so the definition
    keeps its own and takes the rest: it draws the same.
    """
    styles: dict[str, set[str]] = {}
    for match in _USE.finditer(svg):
        styles.setdefault(match.group(2), set()).add(match.group(3))
    shared = {marker: next(iter(found)) for marker, found in styles.items() if len(found) == 1}

    def define(match: re.Match[str]) -> str:
        if match.group(2) not in shared:
            return match.group(0)
        merged = {**_properties(shared[match.group(2)]), **_properties(match.group(3))}
        return f'{match.group(1)} style="{"; ".join(f"{k}: {v}" for k, v in merged.items())}"'

    svg = _DEFINITION.sub(define, svg)
    return _USE.sub(lambda m: m.group(1) if m.group(2) in shared else m.group(0), svg)


def _properties(style: str) -> dict[str, str]:
    return dict(tuple(part.strip() for part in item.split(":", 1)) for item in style.split(";") if ":" in item)
