"""Plots of the report, drawn with matplotlib (no pyplot, no display) and embedded as SVG data URIs.

An SVG inside an ``<img>`` element never runs scripts, so labels taken from the corpus (record ids) stay inert.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np
from matplotlib import rc_context
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from wherefrom.analysis import PowerLawFit, ccdf
from wherefrom.analysis.layers import LayerHeatmap
from wherefrom.outputs.tokens import NEGATIVE_RGB, POSITIVE_RGB

_MAX_POINTS = 2000  # CCDF points drawn; the tail keeps every point, the bulk is thinned evenly in log-rank
_STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#555",
    "axes.labelcolor": "#222",
    "xtick.color": "#444",
    "ytick.color": "#444",
    "svg.fonttype": "path",
    "svg.hashsalt": "wherefrom",  # stable element ids: the same result gives the same file
}
DIVERGING = LinearSegmentedColormap.from_list(  # the token heatmap's blue and orange, through near-white at 0
    "wherefrom_diverging", [tuple(c / 255 for c in rgb) for rgb in (NEGATIVE_RGB, (247, 247, 247), POSITIVE_RGB)]
)


def tail_plot(positive_scores: np.ndarray, fit: PowerLawFit | None) -> str:
    """Log-log 1 - CDF of the positive scores, with the fitted power law over its tail when there is a fit."""
    x, survival = ccdf(positive_scores)
    keep = _thinned(x.size)
    with rc_context(_STYLE):
        figure = Figure(figsize=(5.2, 3.4))
        axes = figure.add_subplot()
        axes.loglog(x[keep], survival[keep], ".", color="#555", markersize=3, label="positive scores")
        if fit is not None:
            line = np.geomspace(fit.x_min, x[-1], 100)
            in_tail = fit.n_tail / x.size
            axes.loglog(line, in_tail * (line / fit.x_min) ** (1.0 - fit.alpha), color=_hex(POSITIVE_RGB),
                        linewidth=2, label=f"power law, alpha = {fit.alpha:.3g}")
            axes.axvline(fit.x_min, color="#999", linestyle="--", linewidth=1, label=f"x_min = {fit.x_min:.3g}")
        axes.set_xlabel("influence (nats per N copies)")
        axes.set_ylabel("1 - CDF  (share of positive scores >= x)")
        axes.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks collide on a short log range
        axes.legend(frameon=False, loc="lower left")  # a falling CCDF leaves that corner empty
        figure.tight_layout()
        return _svg_data_uri(figure)


def layer_heatmap_plot(heatmap: LayerHeatmap, column_labels: Sequence[str]) -> str:
    """Blocks (rows, lowest layers at the bottom) x sequences (columns, by centre of mass), diverging at 0."""
    matrix = heatmap.matrix
    limit = float(np.abs(matrix).max()) or 1.0
    n_blocks, n_columns = matrix.shape
    with rc_context(_STYLE):
        figure = Figure(figsize=(min(max(4.0, 0.42 * n_columns + 2.2), 9.0), max(2.4, 0.19 * n_blocks + 1.7)))
        axes = figure.add_subplot()
        image = axes.imshow(matrix, cmap=DIVERGING, vmin=-limit, vmax=limit, origin="lower", aspect="auto",
                            interpolation="nearest")
        axes.set_xticks(range(n_columns), list(column_labels), rotation=45, ha="right", rotation_mode="anchor")
        axes.set_yticks(range(n_blocks), [_block_label(b.first_layer, b.last_layer) for b in heatmap.blocks])
        axes.set_xlabel("top sequences, ordered by centre of mass (lower layers first)")
        axes.tick_params(length=0)
        for spine in axes.spines.values():
            spine.set_visible(False)
        figure.colorbar(image, ax=axes, label="nats per N copies", fraction=0.05, pad=0.03)
        figure.tight_layout()
        return _svg_data_uri(figure)


def _block_label(first: int, last: int) -> str:
    return f"layer {first}" if first == last else f"layers {first}-{last}"


def _thinned(n: int) -> np.ndarray:
    """Indices of at most about _MAX_POINTS of n sorted points, dense at the top (the tail), sparse in the bulk."""
    if n <= _MAX_POINTS:
        return np.arange(n)
    from_top = np.unique(np.geomspace(1, n, _MAX_POINTS).astype(np.int64))
    return n - from_top


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#" + "".join(f"{c:02x}" for c in rgb)


def _svg_data_uri(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
