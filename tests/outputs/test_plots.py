"""The report's plots are written compactly yet draw the same: matplotlib's own SVG and the compacted one are
rendered side by side in Chromium and compared pixel by pixel; log-axis labels read as powers of ten."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from chromium import NEEDS_BROWSER, browser_context  # noqa: F401 - the fixture
from matplotlib.figure import Figure

from wherefrom.outputs.plots import _power_of_ten, compact_svg


def raw_svg() -> str:
    """A figure with what the report's plots hold: markers placed many times, ticks, text, a line, an image."""
    rng = np.random.default_rng(0)
    figure = Figure(figsize=(4, 3))
    axes = figure.add_subplot()
    x = np.sort(rng.pareto(1.5, 300) + 1)
    axes.loglog(x, np.linspace(1, 1 / 300, 300), ".", color="#555", markersize=3, label="points <b>&</b>")
    axes.loglog(x, x ** -1.2, color="#e66101", linewidth=2, label="a line")
    axes.legend(loc="lower left")
    inset = figure.add_axes((0.6, 0.6, 0.25, 0.25))
    inset.imshow(rng.normal(size=(4, 6)), cmap="RdBu", interpolation="nearest")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue().decode("utf-8")


@NEEDS_BROWSER[0]
@NEEDS_BROWSER[1]
def test_a_compacted_svg_draws_what_matplotlibs_svg_draws(browser_context, tmp_path):  # noqa: F811
    image = pytest.importorskip("PIL.Image")
    raw = raw_svg()
    compact = compact_svg(raw)
    assert len(compact) < 0.8 * len(raw) and "<use" in compact and 'style="fill' not in compact.split("<use")[1][:200]
    shots = []
    for name, svg in (("raw", raw), ("compact", compact)):
        (tmp_path / f"{name}.svg").write_text(svg, encoding="utf-8")
        page = browser_context.new_page()
        page.set_viewport_size({"width": 400, "height": 300})
        page.goto((tmp_path / f"{name}.svg").as_uri())
        shots.append(np.asarray(image.open(io.BytesIO(page.screenshot())).convert("L"), dtype=np.float64))
        page.close()
    difference = np.abs(shots[0] - shots[1])
    assert shots[0].std() > 10  # something was drawn
    assert difference.mean() < 0.5 and np.quantile(difference, 0.99) < 20  # measured 0.10 and 3: anti-aliasing


@pytest.mark.parametrize(("value", "label"), [(1e-3, "10⁻³"), (1.0, "10⁰"), (100.0, "10²"), (1e12, "10¹²"),
                                              (0.5, "0.5"), (30.0, "30")])
def test_log_ticks_read_as_powers_of_ten(value, label):
    assert _power_of_ten(value, 0) == label
    if label.startswith("10"):
        exponent = label[2:].translate(str.maketrans("⁻⁰¹²³⁴⁵⁶⁷⁸⁹", "-0123456789"))
        assert math.isclose(10.0 ** int(exponent), value)
