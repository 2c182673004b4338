"""Short one-line forms of corpus and query texts, for tables, labels and the terminal."""

import re

_WHITESPACE = re.compile(r"\s+")


def shorten(text: str, width: int) -> str:
    """``text`` with each whitespace run (newlines included) made one space, cut to ``width`` characters with an
    ellipsis. Leading and trailing spaces are kept: a completion's leading space is part of it."""
    flat = _WHITESPACE.sub(" ", text)
    return flat if len(flat) <= width else flat[: width - 1] + "…"
