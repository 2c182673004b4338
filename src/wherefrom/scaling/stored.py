"""A comparison read back from the JSON `compare --json` (or `demo --sizes`) wrote, to put it in a report.

Everything the report shows is in that file: each measure's interval and per-query values, the folders' sizes and
steps, the pairs, and the findings a demo wrote beside them. Nothing is recomputed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from wherefrom.analysis.intervals import Interval
from wherefrom.errors import WherefromError
from wherefrom.scaling.compare import GENERATOR, Agreement, FolderComparison, ScaleComparison
from wherefrom.scaling.pairs import QueryPair


def read_comparison(path: str | Path) -> tuple[ScaleComparison, list[str]]:
    """The comparison stored in ``path`` and its findings (empty when none were written)."""
    path = Path(path)
    if not path.is_file():
        raise WherefromError(f"comparison {str(path)!r} {'is a folder' if path.is_dir() else 'not found'}; give "
                             "the JSON file `wherefrom compare --json` wrote.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        data = None
    if not isinstance(data, dict) or data.get("generator") != GENERATOR:
        raise WherefromError(f"{path} is not a comparison written by `wherefrom compare --json`; give that file.")
    try:
        return _comparison(data), [str(s) for s in data.get("findings", [])]
    except (KeyError, TypeError, ValueError) as exc:
        raise WherefromError(f"{path} is a damaged comparison ({type(exc).__name__}: {exc}); write it again with "
                             "`wherefrom compare --json`.") from None


def _comparison(data: dict[str, Any]) -> ScaleComparison:
    return ScaleComparison(
        k=int(data["k"]), query_ids=list(data["queries"]), axis=str(data["axis"]), languages=data["languages"],
        pairs=[QueryPair(p["first"], p["second"], p["first_language"], p["second_language"]) for p in data["pairs"]],
        folders=[FolderComparison(*_measured(f["measures"]), f["label"], f["path"], f["model"], f["parameters"],
                                  f["step"]) for f in data["folders"]],
        agreements=[Agreement(*_measured(a["measures"]), a["first"], a["second"]) for a in data["agreement"]])


def _measured(measures: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Interval]]:
    values = {name: np.array([math.nan if v is None else float(v) for v in m["per_query"].values()])
              for name, m in measures.items()}
    intervals = {name: Interval(*(math.nan if m[key] is None else float(m[key]) for key in ("mean", "low", "high")),
                                int(m["n"])) for name, m in measures.items()}
    return values, intervals
