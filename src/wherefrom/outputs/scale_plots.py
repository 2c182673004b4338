"""Plots of the comparison: each measure's mean over queries, with its interval, against model size or step (the
report's compact percent-encoded SVGs)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from wherefrom.analysis.intervals import Interval
from wherefrom.outputs.plots import _STYLE, _svg_uri

_COLOUR = "#c2571a"
_SPREAD = 0.04  # folders at the same position (seeds of one size) are drawn side by side, this far apart


def measure_plot(positions: Sequence[float], intervals: Sequence[Interval], labels: Sequence[str], axis: str,
                 y_label: str) -> str:
    """Means with interval bars at ``positions`` (log x for parameters spanning 10x or more); an SVG data URI."""
    finite = [p for p, i in zip(positions, intervals, strict=True) if not math.isnan(i.mean)]
    log = axis == "parameters" and bool(finite) and min(finite) > 0 and max(finite) >= 10 * min(finite)
    with rc_context(_STYLE):
        figure = Figure(figsize=(4.6, 3.0))
        axes = figure.add_subplot()
        for x, interval in zip(_side_by_side(positions, log), intervals, strict=True):
            if math.isnan(interval.mean):
                continue
            error = None if math.isnan(interval.low) else [[interval.mean - interval.low], [interval.high - interval.mean]]
            axes.errorbar([x], [interval.mean], yerr=error, fmt="o", color=_COLOUR, ecolor="#888", capsize=3,
                          markersize=5)
        if not finite:
            axes.text(0.5, 0.5, "undefined for every folder", transform=axes.transAxes, ha="center", color="#666")
            axes.set_xticks([])
            axes.set_yticks([])
        if log:
            axes.set_xscale("log")
            axes.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks collide on a short log range
        if axis == "folder":
            axes.set_xticks(list(positions), list(labels), rotation=30, ha="right", rotation_mode="anchor")
        axes.set_xlabel({"parameters": "model parameters", "training step": "training step"}.get(axis, "score folder"))
        axes.set_ylabel(y_label)
        axes.margins(x=0.12)
        figure.tight_layout()
        return _svg_uri(figure)


def _side_by_side(positions: Sequence[float], log: bool) -> list[float]:
    """Positions with repeated values spread a little apart (multiplicatively on a log axis)."""
    span = (max(positions) - min(positions)) or 1.0
    moved = []
    for i, x in enumerate(positions):
        same = [j for j, y in enumerate(positions) if y == x]
        offset = same.index(i) - (len(same) - 1) / 2
        moved.append(x * (1 + _SPREAD * 3) ** offset if log else x + offset * _SPREAD * span)
    return moved
