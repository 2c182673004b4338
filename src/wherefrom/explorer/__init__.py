"""The explorer: a local web page (and JSON API) to ask the model a question and see which training sequences
influenced its answer, token by token (`wherefrom serve`).

Its names are imported on first use, so that `wherefrom serve` can serve the page before the model's stack loads.
"""

from importlib import import_module
from typing import Any

_LAZY = {"create_app": "wherefrom.explorer.app", "SessionLoader": "wherefrom.explorer.loading",
         "ExplorerSession": "wherefrom.explorer.session"}

__all__ = ["ExplorerSession", "SessionLoader", "create_app"]


def __getattr__(name: str) -> Any:  # noqa: ANN401 - the explorer's classes and functions
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'wherefrom.explorer' has no attribute {name!r}")
