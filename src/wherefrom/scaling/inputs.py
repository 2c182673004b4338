"""Opening the score folders to compare and checking that they score the same corpus and the same queries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from wherefrom.errors import WherefromError
from wherefrom.scaling.models import parameter_count, training_step
from wherefrom.scoring.results import ScoreResult

_SAME_CORPUS = "score every model over the same corpus with the same --max-length and --pack"
_PREFIX = 20  # non-space characters of each sequence's text that must agree (tokenizers cut the ends differently)


@dataclass(frozen=True)
class ComparedFolder:
    """One score folder in the comparison; ``rows[i]`` is its row of the i-th compared query."""

    label: str
    path: Path
    result: ScoreResult
    rows: tuple[int, ...]
    parameters: int | None
    step: int | None


def open_folders(paths: Sequence[str | Path]) -> list[ComparedFolder]:
    """The folders, checked to score the same sequences and queries; queries in the first folder's order."""
    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise WherefromError("compare needs at least two score folders (one per model or checkpoint); give "
                             "OUT_A OUT_B [OUT_C ...].")
    results = [ScoreResult.load(p) for p in paths]
    for path, result in zip(paths, results, strict=True):
        columns = str(result.metadata.get("columns", "all"))
        if not columns.startswith("all"):
            raise WherefromError(f"{path} scored only some sequences ({columns}); compare needs every sequence "
                                 "scored: score again without --candidates or --index.")
    for path, result in zip(paths[1:], results[1:], strict=True):
        _check_corpus(paths[0], results[0], path, result)
        _check_queries(paths[0], results[0], path, result)
    order = [q.query_id for q in results[0].queries]
    labels = _labels(paths)
    folders = []
    for label, path, result in zip(labels, paths, results, strict=True):
        index = {q.query_id: q.index for q in result.queries}
        folders.append(ComparedFolder(label, path, result, tuple(index[q] for q in order),
                                      parameter_count(result), training_step(result)))
    return folders


def _check_corpus(first_path: Path, first: ScoreResult, path: Path, result: ScoreResult) -> None:
    if len(result.sequences) != len(first.sequences):
        raise WherefromError(f"{path} scores {len(result.sequences)} sequences and {first_path} "
                             f"{len(first.sequences)}: they score different corpora; {_SAME_CORPUS}.")
    for mine, theirs in zip(result.sequences, first.sequences, strict=True):
        if mine.record_id != theirs.record_id or _head(mine.text) != _head(theirs.text):
            raise WherefromError(f"{path} and {first_path} score different corpora (sequence {mine.row} is record "
                                 f"{mine.record_id!r} in one, {theirs.record_id!r} in the other, or its text "
                                 f"differs); {_SAME_CORPUS}.")


def _check_queries(first_path: Path, first: ScoreResult, path: Path, result: ScoreResult) -> None:
    mine = {q.query_id: q for q in result.queries}
    theirs = {q.query_id: q for q in first.queries}
    if len(mine) != len(result.queries) or len(theirs) != len(first.queries):
        duplicated = path if len(mine) != len(result.queries) else first_path
        raise WherefromError(f"{duplicated} holds two queries with the same id; give every query its own id.")
    if mine.keys() != theirs.keys():
        missing = sorted(theirs.keys() - mine.keys())
        extra = sorted(mine.keys() - theirs.keys())
        what = f"lacks query {missing[0]!r}" if missing else f"has query {extra[0]!r} that {first_path} lacks"
        raise WherefromError(f"{path} and {first_path} score different query sets ({path} {what}); score the same "
                             "queries file with every model.")
    for query_id, query in mine.items():
        if query.prompt.strip() != theirs[query_id].prompt.strip():
            raise WherefromError(f"query {query_id!r} has another prompt in {path} than in {first_path}; score the "
                                 "same queries file with every model.")


def _head(text: str) -> str:
    return "".join(text.split())[:_PREFIX]


def _labels(paths: Sequence[Path]) -> list[str]:
    """Each folder's name, or its path where two folders share a name."""
    return [p.name if sum(q.name == p.name for q in paths) == 1 else str(p) for p in paths]
