"""The gradient index: every training sequence's gradient, compressed once, so new queries need no corpus pass."""

from wherefrom.index.building import build_index
from wherefrom.index.store import GradientIndex

__all__ = ["GradientIndex", "build_index"]
