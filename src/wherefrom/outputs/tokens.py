"""The token heatmap: each token of a training sequence coloured by the influence of its prediction.

Convention: ``per_token[q, offset + j]`` is the influence carried by the model's prediction of token j, and it is
shown on token j, the token being predicted (token 0 is never predicted and stays uncoloured). Orange marks
positive influence, blue negative; the opacity is |value| / scale, with one scale per query so that the
sequences of a query can be compared with one another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

POSITIVE_RGB = (230, 97, 1)  # orange: predicting this token raises log p(completion)
NEGATIVE_RGB = (33, 102, 172)  # blue: it lowers log p(completion)
_MAX_OPACITY = 0.85
_WHITE_TEXT_ABOVE = 0.6  # opacity from which dark text would be hard to read on the colour


@dataclass(frozen=True)
class TokenSpan:
    """One token as shown on the page: its text, its influence and the inline CSS that colours it."""

    text: str
    value: float
    style: str


def token_spans(pieces: Sequence[str], values: Sequence[float], scale: float) -> list[TokenSpan]:
    """Coloured spans for the token ``pieces`` of one sequence and the influence ``values`` of their predictions.

    ``scale`` is the |value| drawn at full colour (the query's largest |value|); a scale of 0 leaves all uncoloured.
    """
    if len(pieces) != len(values):
        raise ValueError(
            f"a sequence has {len(pieces)} token pieces but {len(values)} per-token scores; "
            "pass the pieces and scores of the same sequence"
        )
    return [TokenSpan(text=piece, value=float(value), style=influence_style(float(value), scale))
            for piece, value in zip(pieces, values, strict=True)]


def influence_style(value: float, scale: float) -> str:
    """Inline CSS colouring a value: orange if positive, blue if negative, opacity |value| / scale (capped at 1)."""
    if scale <= 0.0 or value == 0.0:
        return ""
    opacity = _MAX_OPACITY * min(abs(value) / scale, 1.0)
    red, green, blue = POSITIVE_RGB if value > 0.0 else NEGATIVE_RGB
    style = f"background-color: rgba({red}, {green}, {blue}, {opacity:.3f})"
    return style + "; color: #fff" if opacity > _WHITE_TEXT_ABOVE else style
