"""The per-query statistics that come with a figure: the power-law tail and the layer heatmap."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wherefrom.analysis import PowerLawFit, fit_power_law, layer_blocks, layer_heatmap, top_share, transformer_layer
from wherefrom.outputs.plots import layer_heatmap_plot, tail_plot
from wherefrom.scoring.results import ScoreResult

MAX_LAYER_BLOCKS = 24  # rows of the layer heatmap; deeper networks are grouped into contiguous blocks
TOP_SHARE_FRACTION = 0.01


@dataclass(frozen=True)
class Tail:
    """The power-law fit of a query's positive scores, the share held by the top 1%, and their plot."""

    n_scores: int
    n_positive: int
    fit: PowerLawFit | None
    n_bootstrap: int
    top_share: float | None  # None when no score is positive
    plot: str | None  # SVG data URI; None with fewer than 2 positive scores
    message: str | None  # why there is no fit


@dataclass(frozen=True)
class Layers:
    """The layer heatmap of a query's top sequences, or why there is none."""

    plot: str | None
    message: str | None


def tail(scores: np.ndarray, n_bootstrap: int) -> Tail:
    """Fit and plot the upper tail of one query's scores (all sequences)."""
    positive = scores[scores > 0.0]
    fit, message = None, None
    try:
        fit = fit_power_law(scores, n_bootstrap=n_bootstrap)
    except ValueError as error:
        message = f"No power-law fit: {error}."
    return Tail(
        n_scores=int(scores.size),
        n_positive=int(positive.size),
        fit=fit,
        n_bootstrap=n_bootstrap,
        top_share=top_share(scores, TOP_SHARE_FRACTION) if positive.size else None,
        plot=tail_plot(positive, fit) if positive.size >= 2 else None,
        message=message,
    )


def layers(result: ScoreResult, query: int, rows: list[int], labels: dict[int, str]) -> Layers:
    """Blocks x top sequences heatmap of ``query``; ``labels`` names each row's column."""
    if result.per_layer is None:
        return Layers(None, "Per-layer scores were not computed: score with per-layer scores enabled "
                            "(ScoreOptions(per_layer=True)) to see which layers the influence comes from.")
    if not rows:
        return Layers(None, "No sequences to show.")
    try:
        n_layers = len({transformer_layer(name) for name in result.layer_names})
        blocks = layer_blocks(result.layer_names, min(n_layers, MAX_LAYER_BLOCKS))
    except ValueError as error:
        return Layers(None, f"No layer heatmap: {error}.")
    heatmap = layer_heatmap(result.per_layer, blocks, query, rows)
    return Layers(layer_heatmap_plot(heatmap, [labels[row] for row in heatmap.rows.tolist()]), None)
