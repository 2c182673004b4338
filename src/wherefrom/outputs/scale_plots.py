"""Plots of the comparison: each measure's mean over queries, with its interval, against model size or step."""

from __future__ import annotations

import math
from collections.abc import Sequence

from matplotlib import rc_context
from matplotlib.figure import Figure

from wherefrom.analysis.intervals import Interval
from wherefrom.outputs.plots import _STYLE, _svg_data_uri

_COLOUR = "#c2571a"


def measure_plot(positions: Sequence[float], intervals: Sequence[Interval], labels: Sequence[str], axis: str,
                 y_label: str) -> str:
    """Means with interval bars at ``positions`` (log x for parameters spanning 10x or more); an SVG data URI."""
    with rc_context(_STYLE):
        figure = Figure(figsize=(4.6, 3.0))
        axes = figure.add_subplot()
        for x, interval in zip(positions, intervals, strict=True):
            if math.isnan(interval.mean):
                continue
            bounds = (interval.mean - interval.low, interval.high - interval.mean)
            error = None if math.isnan(interval.low) else [[bounds[0]], [bounds[1]]]
            axes.errorbar([x], [interval.mean], yerr=error, fmt="o", color=_COLOUR, ecolor="#888", capsize=3,
                          markersize=5)
        finite = [p for p, i in zip(positions, intervals, strict=True) if not math.isnan(i.mean)]
        if not finite:
            axes.text(0.5, 0.5, "undefined for every folder", transform=axes.transAxes, ha="center", color="#666")
            axes.set_xticks([])
            axes.set_yticks([])
        if axis == "parameters" and finite and min(finite) > 0 and max(finite) >= 10 * min(finite):
            axes.set_xscale("log")
        if axis == "folder":
            axes.set_xticks(list(positions), list(labels), rotation=30, ha="right", rotation_mode="anchor")
        axes.set_xlabel({"parameters": "model parameters", "training step": "training step"}.get(axis, "score folder"))
        axes.set_ylabel(y_label)
        axes.margins(x=0.12)
        figure.tight_layout()
        return _svg_data_uri(figure)
