"""Read corpus records from .jsonl, .txt, .parquet or a `datasets` folder saved with ``save_to_disk``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wherefrom.errors import WherefromError

FORMATS = ".jsonl (one JSON object per line with 'text' or 'input_ids'), .txt (one record per line), .parquet, " \
          "or a folder written by datasets' save_to_disk"


@dataclass(frozen=True)
class Record:
    """One corpus record: its id and either its text or its token ids."""

    id: str
    text: str | None = None
    input_ids: tuple[int, ...] | None = None


def read_records(path: str | Path) -> list[Record]:
    """All records of a corpus file or folder, in file order; ids default to the 0-based record index."""
    path = Path(path)
    if not path.exists():
        raise WherefromError(f"corpus {str(path)!r} not found; expected {FORMATS}.")
    if path.is_dir():
        rows = _dataset_rows(path)
    elif path.suffix == ".jsonl":
        rows = read_json_objects(path)
    elif path.suffix == ".txt":
        rows = [{"text": line} for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    else:
        raise WherefromError(f"cannot read corpus {path.name!r}: expected {FORMATS}.")
    records = [_record(row, index, path) for index, row in enumerate(rows)]
    if not records:
        raise WherefromError(f"corpus {path} is empty: it holds no records.")
    return records


def read_json_objects(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise WherefromError(f"{path}, line {number}: not valid JSON ({exc.msg}).") from exc
            if not isinstance(row, dict):
                raise WherefromError(f"{path}, line {number}: expected a JSON object, got {type(row).__name__}.")
            rows.append(row)
    return rows


def _dataset_rows(path: Path) -> list[dict[str, Any]]:
    try:
        from datasets import DatasetDict, load_from_disk

        data = load_from_disk(str(path))
    except Exception as exc:  # datasets raises several types for a folder it cannot read
        raise WherefromError(f"cannot read {path} as a datasets folder ({exc}); expected {FORMATS}.") from exc
    if isinstance(data, DatasetDict):
        if "train" not in data:
            raise WherefromError(f"{path} holds splits {list(data)}; wherefrom reads the 'train' split.")
        data = data["train"]
    return list(data)


def _record(row: dict[str, Any], index: int, path: Path) -> Record:
    record_id = str(row.get("id", index))
    if row.get("input_ids") is not None:
        ids = row["input_ids"]
        if not isinstance(ids, list | tuple) or not all(isinstance(t, int) for t in ids):
            raise WherefromError(f"{path}, record {record_id}: 'input_ids' must be a list of integers.")
        return Record(record_id, input_ids=tuple(ids))
    text = row.get("text")
    if not isinstance(text, str):
        raise WherefromError(f"{path}, record {record_id}: needs a 'text' string or an 'input_ids' list.")
    return Record(record_id, text=text)
