"""`wherefrom validate lds` end to end: the explained model (the demo's, or a fine-tune trained here), its
retrainings on random subsets with the same recipe, the measured query log-probabilities, each method's scores on
the full corpus, and the LDS of every method (and damping)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wherefrom.data.queries import read_queries
from wherefrom.errors import WherefromError
from wherefrom.faithfulness.lds import Estimate, lds_per_query, linear_datamodeling_score, mean_with_interval
from wherefrom.faithfulness.logprobs import measured_logprobs
from wherefrom.faithfulness.problems import EXPLAINED, LdsProblem
from wherefrom.faithfulness.providers import PROVIDERS, SWEPT, ScoringContext, fitted_run, mean_eigenvalue
from wherefrom.faithfulness.retraining import is_cached, retrain_all, train_missing, training_seeds
from wherefrom.faithfulness.subsets import Subset, membership, sample_subsets
from wherefrom.fileio import read_jsonl
from wherefrom.options import ExecutionOptions, check_number
from wherefrom.synthetic.training import cpu_threads

SWEEP_FACTORS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)  # absolute λ = factor × mean over layers of mean(Λ_ℓ)
CONFIDENCE = 0.95


@dataclass(frozen=True)
class LdsSettings:
    """What an LDS run measures: how many subsets of which size, how many seeds each, which methods."""

    models: int = 32
    fraction: float = 0.5
    seeds: int = 1
    methods: tuple[str, ...] = tuple(PROVIDERS)
    damping_sweep: bool = False
    threads: int = 2
    execution: ExecutionOptions = ExecutionOptions()  # where the scored methods run the model

    def __post_init__(self) -> None:
        check_number("fraction", self.fraction)
        unknown = [m for m in self.methods if m not in PROVIDERS]
        if unknown:
            raise WherefromError(f"unknown method(s) {', '.join(unknown)}; choose among {', '.join(PROVIDERS)}.")
        if self.seeds < 1:
            raise WherefromError(f"--seeds must be at least 1; got {self.seeds}.")
        if self.threads < 1:
            raise WherefromError(f"--threads must be at least 1; got {self.threads}.")


@dataclass
class MethodLds:
    """One method (at one damping): its LDS per query, the mean with its interval, and the mean per query kind."""

    method: str
    damping: str  # "default" (each method's own) or the absolute λ
    estimate: Estimate
    per_query: list[float]
    by_kind: dict[str, float]
    versus_identity: Estimate | None = None  # paired over queries: this method's LDS_q minus identity's


@dataclass
class LdsReport:
    """Everything a run measured, with the protocol needed to reproduce it."""

    protocol: dict[str, Any]
    methods: list[MethodLds]
    sweep: list[MethodLds] = field(default_factory=list)
    measured: list[list[float]] = field(default_factory=list)  # log p(completion) [Q, M], mean over seeds
    seed_agreement: Estimate | None = None  # LDS of one training seed's log p against another's: a noise ceiling


def run_lds(problem: LdsProblem, settings: LdsSettings, quiet: bool = False) -> LdsReport:
    """Train the explained model if it has to be, retrain (or reuse) the subset models, score every method, and
    compute each method's LDS."""
    n_sequences = len(problem.sequences)
    query_rows = read_jsonl(problem.queries)
    queries = read_queries(problem.queries, problem.recipe.tokenizer(), problem.max_length)
    subsets = sample_subsets(n_sequences, settings.models, settings.fraction)
    seeds = training_seeds(problem.seed, settings.seeds)
    explained = problem.explained or explained_model(problem, settings.threads, quiet)
    folders = retrain_all(problem.recipe, list(problem.sequences), subsets, settings.fraction, seeds, problem.cache,
                          settings.threads, quiet)
    logprobs = measured_logprobs(folders, queries, problem.recipe.load, settings.threads, quiet)  # [Q, M, S]
    measured, members = logprobs.mean(axis=2), membership(subsets, n_sequences)
    kinds = [row.get("kind", "all") for row in query_rows]
    context = ScoringContext(explained, problem.corpus, problem.queries, problem.work, problem.max_length,
                             modules=problem.modules, quiet=quiet, execution=settings.execution)

    def evaluate(method: str, damping: float | None) -> MethodLds:
        scores = PROVIDERS[method].scores(context, damping)
        if scores.shape != (len(queries), n_sequences):
            raise WherefromError(f"method {method} gave scores of shape {scores.shape}, expected "
                                 f"{(len(queries), n_sequences)} (queries × corpus documents).")
        per_query, estimate = linear_datamodeling_score(scores, members, measured, CONFIDENCE)
        return MethodLds(method, "default" if damping is None else f"{damping:.4g}", estimate, per_query.tolist(),
                         _mean_by_kind(per_query, kinds))

    with cpu_threads(settings.threads):
        results = [evaluate(method, None) for method in settings.methods]
        sweep, scale = [], None
        if settings.damping_sweep:
            scale = mean_eigenvalue(fitted_run(context, "ekfac"))
            sweep = [evaluate(SWEPT, factor * scale) for factor in SWEEP_FACTORS]
    _compare_with_identity(results + sweep)
    agreement = None
    if settings.seeds > 1:
        agreement = mean_with_interval(lds_per_query(logprobs[:, :, 0], logprobs[:, :, 1]), CONFIDENCE)
    protocol = {
        "subject": problem.subject, "explained_model": str(explained), "recipe": problem.recipe.describe(),
        "seeds_per_subset": settings.seeds, "training_seeds": seeds, "retrained_models": str(problem.cache),
        "corpus": str(problem.corpus), "corpus_documents": n_sequences, "models": settings.models,
        "fraction": settings.fraction, "subset_size": len(subsets[0].rows), "subset_seeds": [s.seed for s in subsets],
        "queries": [q.id for q in queries], "confidence": CONFIDENCE,
        "scores": str(context.scores_folder(SWEPT, None)) if SWEPT in settings.methods else None,
        "mean_eigenvalue": scale, "sweep_factors": list(SWEEP_FACTORS) if settings.damping_sweep else [],
        "measured_logprob_spread": float(np.mean(measured.std(axis=1))),
    }
    return LdsReport(protocol, results, sweep, measured.tolist(), agreement)


def explained_model(problem: LdsProblem, threads: int, quiet: bool) -> Path:
    """The model the recipe trains on the whole corpus with the first seed (cached like the retrainings)."""
    everything = Subset(-1, -1, tuple(range(len(problem.sequences))))
    folder = problem.cache / f"{EXPLAINED}-{problem.seed}"
    if not is_cached(folder, everything):
        train_missing(problem.recipe, list(problem.sequences), [(everything, problem.seed, folder)],
                      "training the explained model on the whole corpus", threads, quiet)
    return folder


def _compare_with_identity(rows: list[MethodLds]) -> None:
    """Give each row its paired difference with the identity method's per-query LDS (when identity was run)."""
    identity = next((np.array(r.per_query) for r in rows if r.method == "identity"), None)
    for row in rows:
        if identity is not None and row.method != "identity":
            row.versus_identity = mean_with_interval(np.array(row.per_query) - identity, CONFIDENCE)


def _mean_by_kind(per_query: np.ndarray, kinds: list[str]) -> dict[str, float]:
    """Mean LDS of each query kind (finite values only)."""
    means = {}
    for kind in dict.fromkeys(kinds):
        values = np.array([v for v, k in zip(per_query, kinds, strict=True) if k == kind])
        finite = values[np.isfinite(values)]
        means[kind] = float(finite.mean()) if finite.size else float("nan")
    return means
