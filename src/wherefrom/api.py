"""The Python API: fit curvature on a corpus, then score queries against training sequences.

    >>> from wherefrom import fit, score, FitOptions, ScoreOptions
    >>> fit("my-model/", "corpus.jsonl", "run/", FitOptions(strategy="ekfac"))
    >>> result = score("run/", "queries.jsonl", out="out/", options=ScoreOptions(per_token=True))
    >>> result.scores  # [n_queries, n_sequences]; positive: the sequence raises log p(completion)
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from wherefrom.curvature.fitting import fit_curvature
from wherefrom.curvature.store import FactorRun, check_compatible, load_run, save_run
from wherefrom.data.corpus import build_sequences, corpus_fingerprint
from wherefrom.data.queries import read_queries
from wherefrom.data.records import read_records
from wherefrom.errors import WherefromError
from wherefrom.models.loading import LoadedModel, load_model
from wherefrom.models.selection import select_layers
from wherefrom.options import FitOptions, ScoreOptions
from wherefrom.scoring.results import ScoreResult
from wherefrom.scoring.scorer import score as score_sequences


def fit(model: str | Path | LoadedModel, corpus: str | Path, out: str | Path,
        options: FitOptions = FitOptions(), quiet: bool = False) -> FactorRun:
    """Fit per-layer curvature of ``model`` on ``corpus`` and save it in the run folder ``out``."""
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    layers = select_layers(loaded.model, options.modules)
    sequences = build_sequences(read_records(corpus), loaded.tokenizer, options.max_length, options.pack)
    curvature = fit_curvature(loaded.model, layers, sequences, options, quiet)
    manifest_options = {**asdict(options), "corpus": str(Path(corpus).resolve())}
    save_run(Path(out), curvature, layers, loaded.source, loaded.fingerprint, corpus_fingerprint(sequences),
             manifest_options)
    return load_run(Path(out))


def score(run: str | Path, queries: str | Path, corpus: str | Path | None = None, out: str | Path | None = None,
          options: ScoreOptions | None = None, model: str | Path | LoadedModel | None = None,
          quiet: bool = False) -> ScoreResult:
    """Score every sequence of ``corpus`` (default: the fitted corpus) against each query of ``queries``.

    ``options`` defaults to the run's own max_length, pack and batch_size. Results are saved in ``out`` when given.
    """
    factors = load_run(Path(run))
    fitted = factors.manifest["options"]
    if options is None:
        options = ScoreOptions(max_length=fitted["max_length"], pack=fitted["pack"], batch_size=fitted["batch_size"])
    if options.query_rank is not None and options.query_rank < 1:
        raise WherefromError(f"--query-rank must be at least 1, got {options.query_rank}.")
    source = model if model is not None else factors.manifest["model"]["source"]
    loaded = source if isinstance(source, LoadedModel) else load_model(source)
    layers = select_layers(loaded.model, fitted["modules"])
    check_compatible(factors, loaded.fingerprint, layers)
    query_list = read_queries(queries, loaded.tokenizer, options.max_length)
    corpus_path = corpus if corpus is not None else fitted["corpus"]
    sequences = build_sequences(read_records(corpus_path), loaded.tokenizer, options.max_length, options.pack)
    result = score_sequences(loaded.model, loaded.tokenizer, layers, factors.curvature, query_list, sequences,
                             options, quiet)
    result.metadata = {
        "strategy": factors.strategy,
        "fisher": fitted["fisher"],
        "damping": "0.1 x mean eigenvalue per layer" if options.damping is None else options.damping,
        "n_training_sequences_fitted": factors.curvature.n_sequences,
        "model": loaded.source,
        "corpus": str(corpus_path),
        "options": asdict(options),
    }
    if out is not None:
        result.save(out, options.top_k)
    return result
