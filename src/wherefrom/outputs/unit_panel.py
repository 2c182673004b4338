"""The "which neurons carry it" panel of one query: its top units as bars of signed shares, the concentration,
and for each unit the query's top sequences ranked by the influence that flows through it (with token heatmaps
when `score --per-unit` ran with per-token scores). Shared by the HTML report and the explorer."""

from __future__ import annotations

from dataclasses import dataclass

from wherefrom.outputs.tokens import TokenSpan, token_spans
from wherefrom.scoring.results import ScoreResult

SHOWN_UNITS = 20  # bars per query; the saved result keeps --per-unit K of them


@dataclass(frozen=True)
class UnitSequence:
    """A top sequence of the query, seen through one unit."""

    row: int
    record_id: str
    value: float  # its influence through the unit
    score: float  # its total influence
    text: str
    tokens: list[TokenSpan] | None  # per-token influence through the unit (None: no map kept for it)


@dataclass(frozen=True)
class UnitBar:
    """One unit: its influence over the query's positively influential sequences and its share of their total."""

    slot: str  # the id of its detail block on the page
    name: str
    influence: float
    share: float
    width: float  # bar length in percent of the largest |share| shown
    sequences: list[UnitSequence]


@dataclass(frozen=True)
class UnitPanel:
    """The panel of one query (``message`` says why it is empty)."""

    bars: list[UnitBar]
    concentration: int | None  # units that carry half of the positive influence (None: no set of them does)
    n_units: int
    view: str
    message: str | None = None


def unit_panel(result: ScoreResult, query: int, anchor: str, shown: int = SHOWN_UNITS) -> UnitPanel:
    """The panel of query ``query`` of ``result``; ``anchor`` prefixes the detail blocks' ids."""
    units = result.units
    if units is None:
        return UnitPanel([], None, 0, "nodes", "Influence per unit was not computed: score with --per-unit K to see "
                                               "which neurons and attention heads carry it.")
    shares = units.shares(query).tolist()[:shown]
    largest = max((abs(s) for s in shares), default=0.0) or 1.0
    rows = [r for r in units.rows[query].tolist() if r >= 0]
    bars = []
    for k, unit in enumerate(units.ids[query].tolist()[:shown]):
        through = units.split[query, :len(rows), k].tolist()
        order = sorted(range(len(rows)), key=lambda m: -through[m])
        maps = None if units.tokens is None else units.tokens[query, :, k]
        scale = 0.0 if maps is None else float(maps.abs().max())
        sequences = [UnitSequence(
            row=rows[m], record_id=result.sequences[rows[m]].record_id, value=through[m],
            score=float(result.scores[query, rows[m]]), text=result.sequences[rows[m]].text,
            tokens=None if maps is None or m >= len(maps) else _spans(result, rows[m], maps[m].tolist(), scale),
        ) for m in order]
        bars.append(UnitBar(f"{anchor}-unit-{k}", units.names[unit], float(units.influence[query, k]), shares[k],
                            100.0 * abs(shares[k]) / largest, sequences))
    concentration = int(units.concentration[query])
    return UnitPanel(bars, None if concentration < 0 else concentration, units.n_units, units.view)


def _spans(result: ScoreResult, row: int, values: list[float], scale: float) -> list[TokenSpan] | None:
    pieces = result.sequences[row].tokens
    return token_spans(pieces, values[:len(pieces)], scale) if pieces else None
