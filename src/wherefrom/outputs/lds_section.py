"""The report's LDS section: the ``lds.json`` that `wherefrom validate lds` wrote into a folder, read as plain
data for the template (outputs sit below faithfulness, so they read its file rather than import its types)."""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from pathlib import Path

from wherefrom.errors import WherefromError

LDS_FILE = "lds.json"
LDS_PLOT = "lds.png"


@dataclass(frozen=True)
class LdsRow:
    """One method (at one damping): its mean LDS, interval, paired difference with identity, and per query kind."""

    method: str
    damping: str
    estimate: str  # "mean [low, high]"
    versus_identity: str  # "mean [low, high]", or "" for identity itself
    by_kind: list[str]


@dataclass(frozen=True)
class LdsSection:
    """What the report shows of an LDS folder."""

    summary: str
    kinds: list[str]
    rows: list[LdsRow]
    seed_agreement: str  # "" with one seed per subset
    plot: str  # a data: URI of lds.png, or ""
    scores: Path | None  # the explained model's EK-FAC scores, whose report this section joins


def interval(estimate: dict | None) -> str:
    """``mean [low, high]`` of an estimate in lds.json ("" for none)."""
    if not estimate:
        return ""
    text = f"{estimate['mean']:.3f}"
    return text + (f" [{estimate['low']:.3f}, {estimate['high']:.3f}]" if math.isfinite(estimate["low"]) else "")


def read_lds(folder: Path) -> LdsSection | None:
    """The LDS section of ``folder`` (None when it holds no lds.json); a damaged file is refused in one line."""
    path = folder / LDS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        p = data["protocol"]
        kinds = list(data["methods"][0]["by_kind"]) if data["methods"] else []
        rows = [LdsRow(r["method"], r["damping"], interval(r["estimate"]), interval(r.get("versus_identity")),
                       [f"{r['by_kind'][k]:.3f}" for k in kinds])
                for r in data["methods"] + data.get("sweep", [])]
        summary = (f"{p['subject']}: {p['models']} models retrained on {p['subset_size']} of {p['corpus_documents']} "
                   f"documents (fraction {p['fraction']}), {p['seeds_per_subset']} seed(s) each, "
                   f"{len(p['queries'])} queries; {100 * p['confidence']:g}% intervals over queries.")
        scores = Path(p["scores"]) if p.get("scores") else None
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise WherefromError(f"{path} is not an LDS result of this version ({type(exc).__name__}: {exc}); run "
                             "`wherefrom validate lds` again into that folder.") from None
    plot_path = folder / LDS_PLOT
    plot = ("data:image/png;base64," + base64.b64encode(plot_path.read_bytes()).decode("ascii")
            if plot_path.is_file() else "")
    return LdsSection(summary, kinds, rows, interval(data.get("seed_agreement")), plot, scores)
