"""Query pairs (the same question in two languages or wordings) and the language of each training sequence.

A pairs file holds one pair per line, the original first and the translation or rewording second, either as
text (``ID_A ID_B`` or ``ID_A ID_B LANG_A LANG_B``, whitespace-separated; ``#`` starts a comment) or as a JSON
object ``{"query_ids": [ID_A, ID_B], "languages": [LANG_A, LANG_B]}`` (``languages`` optional).

The language of a sequence is its corpus record's ``language`` (or ``lang``) field: read from ``--languages
FILE`` (a .jsonl of ``{"id", "language"}`` objects; the corpus itself will do) or, by default, from the corpus
file the score folders name. Records without one have no language and count for no language.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from wherefrom.data.records import read_json_objects, text_lines
from wherefrom.errors import WherefromError
from wherefrom.scoring.results import SequenceInfo

_FORMAT = "one pair per line: 'ID_A ID_B [LANG_A LANG_B]' or {\"query_ids\": [ID_A, ID_B], \"languages\": [...]}"


@dataclass(frozen=True)
class QueryPair:
    """Two queries asking the same thing; ``second`` is the translation or rewording of ``first``."""

    first: str
    second: str
    first_language: str | None = None
    second_language: str | None = None

    @property
    def name(self) -> str:
        return f"{self.first} → {self.second}"


def read_pairs(path: str | Path, query_ids: Sequence[str]) -> list[QueryPair]:
    """The pairs of ``path``, each naming two of ``query_ids``."""
    path = Path(path)
    if not path.is_file():
        raise WherefromError(f"pairs file {str(path)!r} {'is a folder' if path.is_dir() else 'not found'}; give a "
                             f"file with {_FORMAT}.")
    known = set(query_ids)
    pairs = []
    for number, line in text_lines(path):
        text = line.split("#", 1)[0].strip() if not line.lstrip().startswith("{") else line.strip()
        if not text:
            continue
        pair = _parse(text, f"{path}, line {number}")
        unknown = [q for q in (pair.first, pair.second) if q not in known]
        if unknown:
            raise WherefromError(f"{path}, line {number}: query {unknown[0]!r} is not among the scored queries; "
                                 "name queries by the ids of the queries file every folder scored.")
        pairs.append(pair)
    if not pairs:
        raise WherefromError(f"{path} holds no pairs; write {_FORMAT}.")
    return pairs


def _parse(text: str, where: str) -> QueryPair:
    if text.startswith("{"):
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            raise WherefromError(f"{where}: not valid JSON ({exc.msg}); write {_FORMAT}.") from None
        ids, languages = row.get("query_ids"), row.get("languages", [None, None])
    else:
        fields = text.split()
        ids, languages = fields[:2], (fields[2:] if len(fields) == 4 else [None, None] if len(fields) == 2 else None)
    if not _two(ids, str) or not _two(languages, (str, type(None))):
        raise WherefromError(f"{where}: expected {_FORMAT}.")
    return QueryPair(ids[0], ids[1], languages[0], languages[1])


def _two(value: object, kind: type | tuple[type, ...]) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(isinstance(v, kind) for v in value)


def sequence_languages(sequences: Sequence[SequenceInfo], source: str | Path | None) -> list[str | None]:
    """The language of each sequence's record, from ``source`` (a .jsonl of records); all None without one."""
    if source is None or not Path(source).is_file() or Path(source).suffix != ".jsonl":
        return [None] * len(sequences)
    languages = {}
    for index, row in enumerate(read_json_objects(Path(source))):
        language = row.get("language", row.get("lang"))
        if isinstance(language, str):
            languages[str(row.get("id", index))] = language
    return [languages.get(s.record_id) for s in sequences]
