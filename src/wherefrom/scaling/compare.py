"""`compare`: the measures of several score folders (models or checkpoints) over the same corpus and queries."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from wherefrom.analysis.intervals import LEVEL, Interval, t_interval
from wherefrom.analysis.surface import WordBM25, content_words
from wherefrom.errors import WherefromError
from wherefrom.scaling.inputs import ComparedFolder, open_folders
from wherefrom.scaling.measures import Context, between, folder_measures
from wherefrom.scaling.pairs import QueryPair, read_pairs, sequence_languages

GENERATOR = "wherefrom compare"
INTERVAL = f"{LEVEL:.0%} Student t-interval of the mean over queries (over pairs for the pair measures)"


@dataclass(frozen=True)
class Measured:
    """Per-query values of named measures, and their means with intervals."""

    values: dict[str, np.ndarray]
    intervals: dict[str, Interval]


@dataclass(frozen=True)
class FolderComparison(Measured):
    """One model's (or checkpoint's) measures."""

    label: str
    path: str
    model: str | None
    parameters: int | None
    step: int | None


@dataclass(frozen=True)
class Agreement(Measured):
    """How two models' rankings agree, per query."""

    first: str
    second: str


@dataclass(frozen=True)
class ScaleComparison:
    """Everything `compare` measured; ``axis`` is what the models are plotted against."""

    k: int
    query_ids: list[str]
    pairs: list[QueryPair]
    axis: str  # "parameters", "training step" or "folder"
    folders: list[FolderComparison]
    agreements: list[Agreement]
    languages: str | None  # where the sequences' languages were read

    def position(self, folder: FolderComparison) -> float:
        """Where ``folder`` sits on :attr:`axis`."""
        value = {"parameters": folder.parameters, "training step": folder.step}.get(self.axis)
        return float(self.folders.index(folder) + 1 if value is None else value)

    def to_json(self, findings: Sequence[str] = ()) -> str:
        """The whole comparison as JSON (means, intervals and per-query values; NaN as null), with ``findings``
        (sentences stating what it found) when given; :func:`wherefrom.scaling.stored.read_comparison` reads it."""
        return json.dumps({
            "generator": GENERATOR, "k": self.k, "interval": INTERVAL, "axis": self.axis,
            "languages": self.languages, "queries": self.query_ids,
            "pairs": [{"name": p.name, **asdict(p)} for p in self.pairs],
            **({"findings": list(findings)} if findings else {}),
            "folders": [{"label": f.label, "path": f.path, "model": f.model, "parameters": f.parameters,
                         "step": f.step, **_measured_json(f, [self._keys(name) for name in f.values])}
                        for f in self.folders],
            "agreement": [{"first": a.first, "second": a.second, **_measured_json(a, [self.query_ids for _ in a.values])}
                          for a in self.agreements],
        }, indent=2, ensure_ascii=False) + "\n"

    def _keys(self, measure: str) -> list[str]:
        return [p.name for p in self.pairs] if measure in ("pair_spearman", "other_language_share") else self.query_ids


def compare(folders: Sequence[str | Path], k: int = 10, truth: str | Path | None = None,
            pairs: str | Path | None = None, languages: str | Path | None = None) -> ScaleComparison:
    """Compare the score folders ``folders`` (see :mod:`wherefrom.scaling.measures` for every measure).

    ``truth``: the `evaluate` truth file (recall@k of the fact's carriers). ``pairs``: query pairs (see
    :mod:`wherefrom.scaling.pairs`). ``languages``: a .jsonl giving each record's language (default: the corpus).
    """
    if k < 1:
        raise WherefromError(f"--top-k must be at least 1, got {k}.")
    opened = open_folders(folders)
    first = opened[0].result
    query_ids = [first.queries[r].query_id for r in opened[0].rows]
    source = languages if languages is not None else first.metadata.get("corpus")
    if languages is not None and not Path(languages).is_file():
        raise WherefromError(f"--languages {languages} not found; give a .jsonl of {{\"id\", \"language\"}} records.")
    context = _context(opened, k, truth, pairs, source)
    if any(p.second_language for p in context.pairs) and all(lang is None for lang in context.languages):
        what = "is not a .jsonl file here" if not (source and Path(source).is_file() and Path(source).suffix ==
                                                   ".jsonl") else "has no record with a \"language\" field"
        raise WherefromError(f"the pairs name languages but {source} {what}; give --languages FILE (a .jsonl of "
                             "{\"id\", \"language\"} records; the corpus itself will do).")
    measured = [folder_measures(f, context) for f in opened]
    comparison = ScaleComparison(
        k=k, query_ids=query_ids, pairs=list(context.pairs), axis=_axis(opened),
        folders=[FolderComparison(values, _intervals(values), f.label, str(f.path), f.result.metadata.get("model"),
                                  f.parameters, f.step) for f, values in zip(opened, measured, strict=True)],
        agreements=[Agreement(values, _intervals(values), a.label, b.label)
                    for i, a in enumerate(opened) for b in opened[i + 1:] for values in [between(a, b, k)]],
        languages=None if all(lang is None for lang in context.languages) else str(source))
    return comparison


def _context(opened: list[ComparedFolder], k: int, truth: str | Path | None, pairs: str | Path | None,
             languages: str | Path | None) -> Context:
    first = opened[0].result
    queries = [first.queries[r] for r in opened[0].rows]
    texts = [s.text for s in first.sequences]
    bm25 = WordBM25(texts)
    query_texts = [q.prompt + q.completion for q in queries]
    postings: dict[str, list[int]] = {}  # content word → the sequences holding it
    for row, text in enumerate(texts):
        for word in content_words(text):
            postings.setdefault(word, []).append(row)
    disjoint = np.ones((len(queries), len(texts)), dtype=bool)
    for q, text in enumerate(query_texts):
        for word in content_words(text):
            disjoint[q, postings.get(word, [])] = False
    record_ids = [s.record_id for s in first.sequences]
    query_ids = [q.query_id for q in queries]
    return Context(k=k, bm25=np.stack([bm25.scores(t) for t in query_texts]) if queries else np.zeros((0, len(texts))),
                   disjoint=disjoint, query_ids=query_ids, record_ids=record_ids,
                   truths=None if truth is None else _truths(truth, query_ids, set(record_ids)),
                   pairs=[] if pairs is None else read_pairs(pairs, query_ids),
                   languages=sequence_languages(first.sequences, languages))


def _truths(path: str | Path, query_ids: list[str], records: set[str]) -> dict:
    from wherefrom.analysis.fact_tracing import read_truth

    truths = {t.query_id: t for t in read_truth(path)}
    unknown = sorted(truths.keys() - set(query_ids))
    if unknown:
        raise WherefromError(f"the truth names query {unknown[0]!r}, which the folders did not score; give the "
                             "truth of the queries they scored.")
    missing = [r for t in truths.values() for r in t.record_ids if r not in records]
    if missing:
        raise WherefromError(f"the truth names record {missing[0]!r}, which is not in the compared corpus "
                             f"({len(missing)} unknown record ids).")
    return truths


def _axis(opened: list[ComparedFolder]) -> str:
    for axis, values in (("parameters", [f.parameters for f in opened]), ("training step", [f.step for f in opened])):
        if None not in values and len(set(values)) > 1:
            return axis
    return "folder"


def _intervals(values: dict[str, np.ndarray]) -> dict[str, Interval]:
    return {name: t_interval(v.tolist()) for name, v in values.items()}


def _measured_json(measured: Measured, keys) -> dict:  # type: ignore[no-untyped-def]
    per = {}
    for (name, values), names in zip(measured.values.items(), keys, strict=True):
        per[name] = {**measured.intervals[name].as_dict(),
                     "per_query": {n: None if math.isnan(v) else float(v) for n, v in zip(names, values, strict=True)}}
    return {"measures": per}
