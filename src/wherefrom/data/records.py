"""Read corpus records from .jsonl, .txt, .parquet or a `datasets` folder saved with ``save_to_disk``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wherefrom.errors import WherefromError
from wherefrom.fileio import first_line

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
        rows = [{"text": text} for _, line in text_lines(path) for text in line.splitlines() if text.strip()]
    elif path.suffix == ".parquet":
        rows = _parquet_rows(path)
    else:
        raise WherefromError(f"cannot read corpus {path.name!r}: expected {FORMATS}.")
    records = [_record(row, index, path) for index, row in enumerate(rows)]
    if not records:
        raise WherefromError(f"corpus {path} is empty: it holds no records.")
    return records


def read_json_objects(path: Path) -> list[dict[str, Any]]:
    """The JSON object on each non-blank line of a .jsonl file; a bad line is named with its number."""
    rows = []
    for number, line in text_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise WherefromError(f"{path}, line {number}: not valid JSON ({exc.msg}, column {exc.colno}).") from None
        if not isinstance(row, dict):
            raise WherefromError(f"{path}, line {number}: expected a JSON object, got {type(row).__name__}.")
        rows.append(row)
    return rows


def text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of a UTF-8 text file; a line that is not UTF-8 is named by line and byte offset."""
    offset = 0
    try:
        f = path.open("rb")
    except OSError as exc:
        raise WherefromError(f"cannot read {path}: {exc.strerror}.") from None
    with f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise WherefromError(
                    f"{path}, line {number}: not UTF-8 (byte 0x{raw[exc.start]:02x} at byte offset "
                    f"{offset + exc.start} of the file); convert the file to UTF-8 (e.g. iconv -t UTF-8)."
                ) from None
            offset += len(raw)
            yield number, line.removeprefix("\ufeff") if number == 1 else line


def _parquet_rows(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises several types for a damaged or foreign file
        raise WherefromError(f"cannot read {path} as parquet ({first_line(exc)}); expected {FORMATS}.") from None


def token_ids(value: object, where: str, name: str) -> tuple[int, ...]:
    """A list of non-negative integer token ids, or a message naming ``where`` and the field ``name``."""
    if not isinstance(value, list | tuple) or not all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        raise WherefromError(f"{where}: {name!r} must be a list of integers (token ids).")
    if any(t < 0 for t in value):
        raise WherefromError(f"{where}: {name!r} holds the negative token id {min(value)}; token ids start at 0.")
    return tuple(value)


def check_vocabulary(ids: tuple[int, ...], vocabulary: int, where: str, name: str) -> None:
    """Refuse token ids outside the tokenizer's vocabulary (they would index past the model's embedding)."""
    if ids and max(ids) >= vocabulary:
        raise WherefromError(f"{where}: {name!r} holds token id {max(ids)}, outside the model's vocabulary of "
                             f"{vocabulary} tokens; were they made with another tokenizer?")



def _dataset_rows(path: Path) -> list[dict[str, Any]]:
    try:
        from datasets import DatasetDict, load_from_disk

        data = load_from_disk(str(path))
    except Exception as exc:  # datasets raises several types for a folder it cannot read
        raise WherefromError(f"cannot read {path} as a datasets folder ({first_line(exc)}); expected {FORMATS}."
                             ) from None
    if isinstance(data, DatasetDict):
        if "train" not in data:
            raise WherefromError(f"{path} holds splits {list(data)}; wherefrom reads the 'train' split.")
        data = data["train"]
    return list(data)


def _record(row: dict[str, Any], index: int, path: Path) -> Record:
    record_id = str(row.get("id", index))
    if row.get("input_ids") is not None:
        return Record(record_id, input_ids=token_ids(row["input_ids"], f"{path}, record {record_id}", "input_ids"))
    text = row.get("text")
    if not isinstance(text, str):
        raise WherefromError(f"{path}, record {record_id}: needs a 'text' string or an 'input_ids' list.")
    return Record(record_id, text=text)
