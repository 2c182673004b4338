"""The per-query figures' data: the power-law tail (1 - CDF of the positive scores, with the fitted line) and the
layer heatmap (blocks x top sequences).

The data is computed here; the report's SVGs are drawn from it on first use of ``plot`` (matplotlib, imported only
then), and the explorer sends the same data to the page, which draws it in the browser.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from wherefrom.analysis import (
    LayerBlock,
    LayerHeatmap,
    PowerLawFit,
    ccdf,
    fit_power_law,
    layer_blocks,
    layer_heatmap,
    top_share,
    transformer_layer,
)
from wherefrom.outputs.tokens import NEGATIVE_RGB, POSITIVE_RGB
from wherefrom.scoring.results import ScoreResult

MAX_LAYER_BLOCKS = 24  # rows of the layer heatmap; deeper networks are grouped into contiguous blocks
TOP_SHARE_FRACTION = 0.01
MAX_TAIL_POINTS = 2000  # 1 - CDF points kept: every point of the tail, the bulk thinned evenly in log-rank
DIVERGING_RGB = (NEGATIVE_RGB, (247, 247, 247), POSITIVE_RGB)  # the heatmap's colours at -limit, 0 and +limit
# (the token heatmap's blue and orange, through near-white), interpolated linearly between them


@dataclass(frozen=True)
class Tail:
    """The power-law fit of a query's positive scores, the share held by the top 1%, and the points of its plot."""

    n_scores: int
    n_positive: int
    fit: PowerLawFit | None
    n_bootstrap: int
    top_share: float | None  # None when no score is positive
    message: str | None  # why there is no fit
    x: np.ndarray | None = field(repr=False, compare=False)  # positive scores, ascending (thinned in the bulk);
    # None with fewer than 2 positive scores
    survival: np.ndarray | None = field(repr=False, compare=False)  # 1 - CDF at each x: share of positive >= x
    fit_line: tuple[tuple[float, float], tuple[float, float]] | None  # the fitted power law's 1 - CDF from x_min
    # to the largest score (a straight line on log-log axes); None without a fit

    @cached_property
    def plot(self) -> str | None:
        """Log-log 1 - CDF of the positive scores with the fitted line, as an SVG data URI (None without points)."""
        from wherefrom.outputs.plots import tail_plot

        return None if self.x is None else tail_plot(self)


@dataclass(frozen=True)
class Layers:
    """The layer heatmap of a query's top sequences, or why there is none."""

    heatmap: LayerHeatmap | None
    labels: list[str]  # each column's label, in the heatmap's column order
    message: str | None

    @property
    def block_labels(self) -> list[str]:
        """Each row's label (a block of transformer layers), lowest layers first."""
        return [] if self.heatmap is None else [_block_label(b) for b in self.heatmap.blocks]

    @property
    def limit(self) -> float:
        """|influence| drawn at full colour: the largest |value| of the matrix (1 when all are 0)."""
        return 1.0 if self.heatmap is None else float(np.abs(self.heatmap.matrix).max()) or 1.0

    @cached_property
    def plot(self) -> str | None:
        """The heatmap as an SVG data URI (None without one)."""
        from wherefrom.outputs.plots import layer_heatmap_plot

        return None if self.heatmap is None else layer_heatmap_plot(self)


def tail(scores: np.ndarray, n_bootstrap: int) -> Tail:
    """Fit the upper tail of one query's scores (all sequences) and take the points of its plot."""
    positive = scores[scores > 0.0]
    fit, message = None, None
    try:
        fit = fit_power_law(scores, n_bootstrap=n_bootstrap)
    except ValueError as error:
        message = f"No power-law fit: {error}."
    x = survival = line = None
    if positive.size >= 2:
        x, survival = ccdf(positive)
        if fit is not None:
            in_tail, largest = fit.n_tail / x.size, float(x[-1])
            line = ((fit.x_min, in_tail), (largest, in_tail * (largest / fit.x_min) ** (1.0 - fit.alpha)))
        keep = _thinned(x.size)
        x, survival = x[keep], survival[keep]
    return Tail(n_scores=int(scores.size), n_positive=int(positive.size), fit=fit, n_bootstrap=n_bootstrap,
                top_share=top_share(scores, TOP_SHARE_FRACTION) if positive.size else None, message=message,
                x=x, survival=survival, fit_line=line)


def layers(result: ScoreResult, query: int, rows: list[int], labels: dict[int, str]) -> Layers:
    """Blocks x top sequences heatmap of ``query``; ``labels`` names each row's column."""
    if result.per_layer is None:
        return Layers(None, [], "Per-layer scores were not computed: score with per-layer scores enabled "
                                "(ScoreOptions(per_layer=True)) to see which layers the influence comes from.")
    if not rows:
        return Layers(None, [], "No sequences to show.")
    try:
        n_layers = len({transformer_layer(name) for name in result.layer_names})
        blocks = layer_blocks(result.layer_names, min(n_layers, MAX_LAYER_BLOCKS))
    except ValueError as error:
        return Layers(None, [], f"No layer heatmap: {error}.")
    heatmap = layer_heatmap(result.per_layer, blocks, query, rows)
    return Layers(heatmap, [labels[row] for row in heatmap.rows.tolist()], None)


def _thinned(n: int) -> np.ndarray:
    """Indices of at most about MAX_TAIL_POINTS of n sorted points, dense at the top (the tail), sparse in the
    bulk."""
    if n <= MAX_TAIL_POINTS:
        return np.arange(n)
    from_top = np.unique(np.geomspace(1, n, MAX_TAIL_POINTS).astype(np.int64))
    return n - from_top


def _block_label(block: LayerBlock) -> str:
    return f"layer {block.first_layer}" if block.first_layer == block.last_layer else \
        f"layers {block.first_layer}-{block.last_layer}"
