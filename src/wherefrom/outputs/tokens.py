"""The token heatmap: each token of a training sequence coloured by the influence of its prediction.

Convention: ``per_token[q, offset + j]`` is the influence carried by the model's prediction of token j, and it is
shown on token j, the token being predicted (token 0 is never predicted and stays uncoloured). Orange marks
positive influence, blue negative; the opacity is |value| / scale, with one scale per query so that the
sequences of a query can be compared with one another. The report colours a token with a CSS class and its
opacity (``class="p" style="--o:.42"``); the explorer's page with the inline CSS of :attr:`TokenSpan.style`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

POSITIVE_RGB = (230, 97, 1)  # orange: predicting this token raises log p(completion)
NEGATIVE_RGB = (33, 102, 172)  # blue: it lowers log p(completion)
_MAX_OPACITY = 0.85
WHITE_TEXT_ABOVE = 0.6  # opacity from which dark text would be hard to read on the colour


@dataclass(frozen=True)
class TokenSpan:
    """One token as shown on the page: its text, its influence and the opacity of its colour."""

    text: str
    value: float
    opacity: float | None  # |value| / scale, capped; None: uncoloured (a value of 0, or a scale of 0)

    @property
    def colour_class(self) -> str:
        """The report's CSS classes of its colour: ``p`` (orange) or ``n`` (blue), ``w`` for white text; or ''."""
        if self.opacity is None:
            return ""
        return ("p" if self.value > 0.0 else "n") + (" w" if self.opacity > WHITE_TEXT_ABOVE else "")

    @property
    def style(self) -> str:
        """Its colour as inline CSS (what the explorer's page sets on the token); '' when uncoloured."""
        if self.opacity is None:
            return ""
        red, green, blue = POSITIVE_RGB if self.value > 0.0 else NEGATIVE_RGB
        style = f"background-color: rgba({red}, {green}, {blue}, {self.opacity:.3f})"
        return style + "; color: #fff" if self.opacity > WHITE_TEXT_ABOVE else style


def token_spans(pieces: Sequence[str], values: Sequence[float], scale: float) -> list[TokenSpan]:
    """Coloured spans for the token ``pieces`` of one sequence and the influence ``values`` of their predictions.

    ``scale`` is the |value| drawn at full colour (the query's largest |value|); a scale of 0 leaves all uncoloured.
    """
    if len(pieces) != len(values):
        raise ValueError(
            f"a sequence has {len(pieces)} token pieces but {len(values)} per-token scores; "
            "pass the pieces and scores of the same sequence"
        )
    return [TokenSpan(text=piece, value=float(value), opacity=influence_opacity(float(value), scale))
            for piece, value in zip(pieces, values, strict=True)]


def influence_opacity(value: float, scale: float) -> float | None:
    """Opacity of a value's colour: |value| / scale (capped at 1) of the strongest; None for 0 or a scale of 0."""
    if scale <= 0.0 or value == 0.0:
        return None
    return _MAX_OPACITY * min(abs(value) / scale, 1.0)


def influence_style(value: float, scale: float) -> str:
    """Inline CSS colouring a value: orange if positive, blue if negative, opacity |value| / scale (capped at 1)."""
    return TokenSpan("", value, influence_opacity(value, scale)).style
