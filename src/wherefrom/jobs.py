"""Job fingerprints: a short hash of everything that determines a job's result, to resume or refuse a folder."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def job_fingerprint(**parts: Any) -> str:
    """A hash of everything that determines a job's result (options, model, corpus, queries)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
