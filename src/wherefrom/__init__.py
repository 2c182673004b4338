"""wherefrom: trace what a language model says back to the training sequences that shaped it.

Influence functions with an EK-FAC approximation of the Gauss-Newton Hessian (Grosse et al., 2023).
"""

from wherefrom.api import fit, score, units
from wherefrom.errors import WherefromError
from wherefrom.options import FitOptions, ScoreOptions
from wherefrom.scaling.compare import compare
from wherefrom.scoring.results import ScoreResult
from wherefrom.version import __version__

__all__ = ["FitOptions", "ScoreOptions", "ScoreResult", "WherefromError", "__version__", "compare", "fit", "score", "units"]
