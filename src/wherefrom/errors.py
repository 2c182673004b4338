"""Errors meant for the person running wherefrom: each names the problem and what to do about it."""


class WherefromError(ValueError):
    """A problem with the user's input or saved state; the CLI prints it without a traceback.

    A ValueError, so that callers of the Python API may catch it as one.
    """
