"""The score result: what `score` computes and what every analysis, report and page reads.

On disk (OUT/):
- ``scores.safetensors``: ``scores`` [n_queries, n_sequences] float32; optional ``per_layer``
  [n_layers, n_queries, n_sequences], ``per_token`` [n_queries, n_tokens_total] (row n of the corpus owns the
  slice ``token_offsets[n]:token_offsets[n+1]``), ``token_offsets`` [n_sequences + 1] int64, with
  ``--per-token-top N`` ``token_rows`` [n_queries, N] int64 (the only sequences whose tokens hold shares), and
  ``self_influence`` [n_sequences]; with normalisation, ``cosine`` [n_queries, n_sequences] (the influence over
  both gradients' norms in the (G + λI)⁻¹ metric, see scoring/cosine.py) and ``query_self_influence`` [n_queries];
  with ``--per-unit`` the ``unit_*`` tensors of :mod:`wherefrom.scoring.unit_results`.
- ``sequences.jsonl``: one line per score column: row, corpus record id, token span, text and token pieces.
- ``queries.jsonl``: one line per query: id, prompt, completion and their token ids; for a completion the model
  wrote, how (stop rule, token budget, sampling) and why it ended.
- ``results.jsonl``: per query, the top-k sequences (by cosine when normalised, else by influence) with score,
  cosine, text, per-layer split and per-token scores; with ``--per-unit``, the query's top units (influence,
  share), their concentration, and each top sequence's split.
- ``manifest.json``: layer names, the options used, units and sign.

Sign and units: I(z, q) = ∇f(q)ᵀ (G + λI)⁻¹ ∇log p(z). Positive means adding z to training raises the query's
completion log-probability; an influence of 1 is one nat of log p(completion) per N copies of z added
(N = number of training sequences), to first order.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from wherefrom.data.records import read_json_objects
from wherefrom.errors import WherefromError
from wherefrom.fileio import atomic_write_text, first_line, jsonl_text, save_tensors
from wherefrom.folders import FOREIGN, describe, folder_kind, read_manifest
from wherefrom.scoring.unit_results import UnitInfluence

SIGN_AND_UNITS = (
    "influence = grad f(query)^T (G + lambda I)^-1 grad log p(sequence); positive: training on the sequence raises "
    "log p(completion | prompt); units: nats of completion log-probability per N copies of the sequence "
    "(N = number of training sequences), to first order"
)


@dataclass
class SequenceInfo:
    """One column of the score matrix: a training sequence cut from a corpus record."""

    row: int
    record_id: str
    start: int  # first token of the record covered by this sequence (after packing or truncation)
    end: int  # one past the last token
    text: str
    tokens: list[str] = field(default_factory=list)  # decoded token pieces, one per token


@dataclass
class QueryInfo:
    """One row of the score matrix: a prompt and the completion whose log-probability is measured."""

    index: int
    query_id: str
    prompt: str
    completion: str
    prompt_ids: list[int]
    completion_ids: list[int]
    completion_logprob: float | None = None  # log p(completion | prompt) under the model, in nats
    generation: dict | None = None  # how the model wrote the completion (see data.queries.Generation); None: given


@dataclass
class ScoreResult:
    """Influence scores of training sequences (columns) on queries (rows), with optional decompositions.

    ``per_token[q, token_offsets[n] + j]`` is the influence carried by the model's prediction of token j of
    sequence n (its activations at position j-1); token 0 is never predicted and always holds 0.
    Sums: ``per_layer.sum(0) == scores`` and each sequence's per-token slice sums to its score; with
    ``token_rows`` only query q's sequences ``token_rows[q]`` have token shares (the others' slices hold 0).
    """

    scores: torch.Tensor
    sequences: list[SequenceInfo]
    queries: list[QueryInfo]
    layer_names: list[str]
    per_layer: torch.Tensor | None = None
    per_token: torch.Tensor | None = None
    token_offsets: torch.Tensor | None = None
    token_rows: torch.Tensor | None = None  # [Q, N]: the sequences with token shares per query (None: all)
    self_influence: torch.Tensor | None = None
    cosine: torch.Tensor | None = None  # [Q, N]: normalised influence; when present it orders the sequences
    query_self_influence: torch.Tensor | None = None  # [Q]: ‖∇L_q‖² in the (G + λI)⁻¹ metric
    units: UnitInfluence | None = None  # which neurons and heads carry each query's influence (--per-unit)
    metadata: dict[str, Any] = field(default_factory=dict)

    def has_token_scores(self, query: int, row: int) -> bool:
        """Whether sequence ``row``'s influence on query ``query`` is split over its tokens."""
        return self.per_token is not None and (self.token_rows is None or bool((self.token_rows[query] == row).any()))

    def token_scores(self, query: int, row: int) -> torch.Tensor:
        """Per-token influence of sequence ``row`` on query ``query`` (length = the sequence's tokens)."""
        if self.per_token is None or self.token_offsets is None:
            raise ValueError("these results hold no per-token scores; score again with per_token enabled")
        if not self.has_token_scores(query, row):
            raise ValueError(f"sequence {row} is not among query {query}'s {self.token_rows.shape[1]} sequences with "
                             "token shares (--per-token-top)")
        lo, hi = int(self.token_offsets[row]), int(self.token_offsets[row + 1])
        return self.per_token[query, lo:hi]

    @property
    def ranking(self) -> torch.Tensor:
        """What orders the sequences [Q, N]: the cosine when the scores were normalised, else the influence."""
        return self.scores if self.cosine is None else self.cosine

    @property
    def ranked_by(self) -> str:
        """'cosine' or 'influence': the name of :attr:`ranking`."""
        return "influence" if self.cosine is None else "cosine"

    def top(self, query: int, k: int) -> list[int]:
        """Rows of the k best sequences for a query by :attr:`ranking`, best first."""
        k = min(k, self.scores.shape[1])
        return torch.topk(self.ranking[query], k).indices.tolist()

    def save(self, out_dir: str | os.PathLike[str], top_k: int = 20) -> Path:
        """Write the result into ``out_dir`` (see module docstring); each file is written atomically, and the
        manifest, which marks the folder finished, is removed first and written last, so that a save stopped
        midway never leaves an earlier result's manifest beside new files."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "manifest.json").unlink(missing_ok=True)
        tensors = {}
        for name in ("scores", "per_layer", "per_token", "token_offsets", "token_rows", "self_influence", "cosine",
                     "query_self_influence"):
            value = getattr(self, name)
            if value is not None:
                tensors[name] = (value.float() if value.is_floating_point() else value).contiguous()
        if self.units is not None:
            tensors.update({k: v.contiguous() for k, v in self.units.tensors().items()})
        save_tensors(out / "scores.safetensors", tensors)
        atomic_write_text(out / "sequences.jsonl", jsonl_text(asdict(s) for s in self.sequences))
        atomic_write_text(out / "queries.jsonl", jsonl_text(asdict(q) for q in self.queries))
        atomic_write_text(out / "results.jsonl", jsonl_text(self._query_summaries(top_k)))
        manifest = {"kind": "scores", "layer_names": self.layer_names, "sign_and_units": SIGN_AND_UNITS,
                    **self.metadata, "ranked_by": self.ranked_by,
                    **(self.units.manifest() if self.units is not None else {})}
        atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
        return out

    @classmethod
    def load(cls, out_dir: str | os.PathLike[str]) -> ScoreResult:
        """Read a result written by :meth:`save`, refusing a damaged or foreign folder with a message."""
        out = Path(out_dir)
        path = out / "scores.safetensors"
        if not path.is_file() or not (out / "manifest.json").is_file():
            found = folder_kind(out)
            what = f"is {describe(found)}, not a score folder" if found not in (None, FOREIGN, "scores") else \
                "holds no finished scores (scores.safetensors and manifest.json)"
            raise WherefromError(f"{out} {what}; give the --out folder of `wherefrom score`.")
        manifest = read_manifest(out, "scores", {"layer_names": list}, _RESCORE)
        try:
            tensors = load_file(str(path))
        except Exception as exc:  # safetensors raises its own error type for a truncated or foreign file
            raise WherefromError(f"{path} is damaged ({first_line(exc)}); {_RESCORE}") from None
        manifest.pop("kind", None)
        layer_names = manifest.pop("layer_names")
        manifest.pop("sign_and_units", None)
        manifest.pop("ranked_by", None)
        result = cls(
            scores=tensors.get("scores", torch.empty(0)),
            sequences=_read_rows(out / "sequences.jsonl", SequenceInfo),
            queries=_read_rows(out / "queries.jsonl", QueryInfo),
            layer_names=layer_names,
            per_layer=tensors.get("per_layer"),
            per_token=tensors.get("per_token"),
            token_offsets=tensors.get("token_offsets"),
            token_rows=tensors.get("token_rows"),
            self_influence=tensors.get("self_influence"),
            cosine=tensors.get("cosine"),
            query_self_influence=tensors.get("query_self_influence"),
            units=UnitInfluence.load(tensors, manifest),
            metadata=manifest,
        )
        problem = result._inconsistency()
        if problem:
            raise WherefromError(f"{out} is damaged: {problem}; {_RESCORE}")
        return result

    def _inconsistency(self) -> str | None:
        """What disagrees between the saved tensors and the sidecars, or None."""
        n_queries, n_sequences = len(self.queries), len(self.sequences)
        if tuple(self.scores.shape) != (n_queries, n_sequences):
            return (f"scores has shape {tuple(self.scores.shape)}, but there are {n_queries} queries and "
                    f"{n_sequences} sequences")
        if self.per_layer is not None and tuple(self.per_layer.shape) != (len(self.layer_names), *self.scores.shape):
            return f"per_layer has shape {tuple(self.per_layer.shape)} for {len(self.layer_names)} layers"
        if (self.per_token is None) != (self.token_offsets is None):
            return "per_token and token_offsets come only together"
        if self.token_offsets is not None and (
                tuple(self.token_offsets.shape) != (n_sequences + 1,)
                or self.per_token.shape != (n_queries, int(self.token_offsets[-1]))
                or bool((self.token_offsets.diff() < 0).any())):
            return "per_token does not match token_offsets"
        if self.token_rows is not None and (
                self.per_token is None or self.token_rows.dim() != 2 or self.token_rows.shape[0] != n_queries
                or self.token_rows.is_floating_point() or bool(((self.token_rows < 0) | (self.token_rows >= n_sequences)).any())):
            return "token_rows does not name sequences with per-token scores"
        if self.self_influence is not None and tuple(self.self_influence.shape) != (n_sequences,):
            return "self_influence does not have one value per sequence"
        if self.cosine is not None and self.cosine.shape != self.scores.shape:
            return f"cosine has shape {tuple(self.cosine.shape)}, scores {tuple(self.scores.shape)}"
        if self.query_self_influence is not None and tuple(self.query_self_influence.shape) != (n_queries,):
            return "query_self_influence does not have one value per query"
        # Queries are numbered 0, 1, ...; sequences keep their corpus rows, increasing, which skip the rows not
        # scored (--candidates, or an index's re-scored top).
        rows = [s.row for s in self.sequences]
        if any(q.index != i for i, q in enumerate(self.queries)) or not all(a < b for a, b in zip([-1, *rows], rows)):
            return "queries.jsonl or sequences.jsonl is out of order"
        return None

    def _query_summaries(self, top_k: int) -> list[dict[str, Any]]:
        summaries = []
        for q in self.queries:
            top = []
            for rank, row in enumerate(self.top(q.index, top_k), start=1):
                seq = self.sequences[row]
                entry: dict[str, Any] = {
                    "rank": rank,
                    "row": row,
                    "record_id": seq.record_id,
                    "score": float(self.scores[q.index, row]),
                    **({} if self.cosine is None else {"cosine": float(self.cosine[q.index, row])}),
                    "text": seq.text,
                }
                if self.per_layer is not None:
                    entry["per_layer"] = dict(zip(self.layer_names, self.per_layer[:, q.index, row].tolist()))
                if self.has_token_scores(q.index, row):
                    entry["tokens"] = seq.tokens
                    entry["per_token"] = self.token_scores(q.index, row).tolist()
                if self.units is not None and (split := self.units.sequence_split(q.index, row)) is not None:
                    entry["per_unit"] = split
                top.append(entry)
            summary = {"query": q.index, "query_id": q.query_id, "prompt": q.prompt, "completion": q.completion}
            if self.units is not None:
                summary.update(self.units.summary(q.index))
            summaries.append({**summary, "top": top})
        return summaries


_RESCORE = "score again with `wherefrom score ... --restart`."


def _read_rows(path: Path, row_type: type) -> list:
    """The rows of a sidecar .jsonl as ``row_type`` dataclasses, each field of its declared type."""
    if not path.is_file():
        raise WherefromError(f"{path} is missing: the score folder is damaged; {_RESCORE}")
    declared = {f.name: f.type for f in fields(row_type)}
    rows = []
    for number, row in enumerate(read_json_objects(path), start=1):
        try:
            value = row_type(**row)
        except TypeError:
            raise WherefromError(f"{path}, record {number}: expected the fields {', '.join(declared)}; "
                                 f"{_RESCORE}") from None
        wrong = next((name for name, kind in declared.items() if not _is(getattr(value, name), kind)), None)
        if wrong is not None:
            raise WherefromError(f"{path}, record {number}: {wrong!r} is {type(getattr(value, wrong)).__name__}, "
                                 f"not {declared[wrong]}; {_RESCORE}")
        rows.append(value)
    return rows


def _is(value: Any, declared: str) -> bool:
    """Whether ``value`` fits a field's declared type (as written in the dataclass: str, int, list[...], ...)."""
    if value is None:
        return "None" in declared
    base = {"str": str, "int": int, "float": (int, float), "list": list, "dict": dict}[declared.split("[")[0].split(" ")[0]]
    return isinstance(value, base) and not (isinstance(value, bool) and base is not bool)
