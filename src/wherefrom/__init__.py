"""wherefrom: trace what a language model says back to the training sequences that shaped it.

Influence functions with an EK-FAC approximation of the Gauss-Newton Hessian (Grosse et al., 2023).
"""

from importlib import import_module
from typing import Any

from wherefrom.errors import WherefromError
from wherefrom.options import FitOptions, ScoreOptions
from wherefrom.version import __version__

_LAZY = {"fit": "wherefrom.api", "score": "wherefrom.api", "units": "wherefrom.api", "compare": "wherefrom.scaling.compare",
         "ScoreResult": "wherefrom.scoring.results"}  # imported on first use: a command starts without torch's stack

__all__ = ["FitOptions", "ScoreOptions", "ScoreResult", "WherefromError", "__version__", "compare", "fit", "score", "units"]


def __getattr__(name: str) -> Any:  # noqa: ANN401 - the API's functions and classes
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'wherefrom' has no attribute {name!r}")
