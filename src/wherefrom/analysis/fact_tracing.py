"""`wherefrom evaluate`: score folders and BM25 against a truth file (query id → the records it should find).

BM25 is the paper's modified BM25 over the model's tokens (scoring/candidates.py, Grosse et al. eq. 28-29),
ranking every sequence of the corpus the first score folder was computed on: the baseline influence has to
beat at finding the documents that state a fact (TrackStar, Chang et al. 2024).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from wherefrom.analysis.retrieval import MethodEvaluation, Ranking, Truth, evaluate, record_order, score_rankings
from wherefrom.data.corpus import TrainingSequence, build_sequences
from wherefrom.data.records import read_json_objects, read_records
from wherefrom.errors import WherefromError
from wherefrom.models.loading import load_tokenizer
from wherefrom.scoring.candidates import CandidateIndex, query_token_ids
from wherefrom.scoring.results import QueryInfo, ScoreResult

BM25 = "BM25"


def read_truth(path: str | Path) -> list[Truth]:
    """TRUTH.jsonl: one ``{"query_id": ..., "record_ids": [...], "group": optional}`` per line."""
    if not Path(path).is_file():
        what = "is a folder, not a file" if Path(path).is_dir() else "not found"
        raise WherefromError(f"truth file {str(path)!r} {what}; give a file with one JSON object per line: "
                             "{\"query_id\": \"...\", \"record_ids\": [\"...\"]}.")
    truths = []
    for line, row in enumerate(read_json_objects(Path(path)), start=1):
        query_id, record_ids = row.get("query_id"), row.get("record_ids")
        if not isinstance(query_id, str) or not isinstance(record_ids, list) or not record_ids \
                or not all(isinstance(r, str) for r in record_ids):
            raise WherefromError(f"{path} line {line}: expected {{\"query_id\": \"...\", \"record_ids\": [\"...\", "
                                 "...]} with at least one record id (and optionally \"group\").")
        group = row.get("group")
        truths.append(Truth(query_id, tuple(record_ids), None if group is None else str(group)))
    if not truths:
        raise WherefromError(f"{path} holds no queries; write one JSON object per line: query_id, record_ids.")
    duplicated = {t.query_id for t in truths if sum(u.query_id == t.query_id for u in truths) > 1}
    if duplicated:
        raise WherefromError(f"{path} names query {sorted(duplicated)[0]!r} more than once; give each query one line.")
    return truths


def bm25_ranking(sequences: Sequence[TrainingSequence], queries: Sequence[QueryInfo]) -> Ranking:
    """Every sequence ranked for each query by eq. 28 on the model's tokens (prompt + completion)."""
    index = CandidateIndex.from_corpus([s.input_ids for s in sequences])
    scores = torch.from_numpy(index.scores_batch([query_token_ids(q) for q in queries]))
    record_ids = [s.record_id for s in sequences]
    return Ranking(BM25, {q.query_id: record_order(scores[i], record_ids) for i, q in enumerate(queries)})


def corpus_of(result: ScoreResult, folder: Path) -> list[TrainingSequence]:
    """The training sequences of the corpus a score folder was computed on, tokenized as it was scored."""
    metadata, options = result.metadata, result.metadata.get("options", {})
    if not {"corpus", "model"} <= set(metadata) or not {"max_length", "pack"} <= set(options):
        raise WherefromError(f"{folder}/manifest.json does not name its corpus, model and options; evaluate a "
                             "folder written by `wherefrom score`.")
    return build_sequences(read_records(metadata["corpus"]), load_tokenizer(metadata["model"]),
                           options["max_length"], options["pack"])


def evaluate_folders(folders: Mapping[str, Path], truths: Sequence[Truth], ks: Sequence[int]
                     ) -> list[MethodEvaluation]:
    """BM25 over the first folder's corpus and queries, then every ranking each folder (by method name) holds,
    on ``truths``."""
    if any(k < 1 for k in ks):
        raise WherefromError(f"every k of recall@k must be at least 1, got {min(ks)}.")
    for folder in folders.values():
        if not (Path(folder) / "scores.safetensors").is_file():
            raise WherefromError(f"{folder} holds no scores.safetensors: give the --out folder of `wherefrom score`.")
    results = {name: (Path(folder), ScoreResult.load(folder)) for name, folder in folders.items()}
    first_folder, first = next(iter(results.values()))
    sequences = corpus_of(first, first_folder)
    corpus_records = {s.record_id for s in sequences}
    rankings = [bm25_ranking(sequences, first.queries)]
    for name, (folder, result) in results.items():
        if not {s.record_id for s in result.sequences} <= corpus_records:
            raise WherefromError(f"{folder} ranks records that are not in {first.metadata['corpus']}: every "
                                 "--scores folder must rank the same corpus.")
        rankings.extend(score_rankings(result, name))
    unknown = [r for t in truths for r in t.record_ids if r not in corpus_records]
    if unknown:
        raise WherefromError(f"the truth names record {unknown[0]!r}, which is not in the corpus "
                             f"{first.metadata['corpus']} ({len(unknown)} unknown record ids).")
    try:
        return [evaluate(ranking, truths, ks) for ranking in rankings]
    except ValueError as exc:
        raise WherefromError(str(exc) + ".") from None


def method_names(folders: Sequence[Path]) -> dict[str, Path]:
    """Score folders by method name: each folder's name, or its path when two folders share the name."""
    return {folder.name if sum(f.name == folder.name for f in folders) == 1 else str(folder): folder
            for folder in folders}
