"""The Python API: fit curvature on a corpus, then score queries against training sequences.

    >>> from wherefrom import fit, score, FitOptions, ScoreOptions
    >>> fit("my-model/", "corpus.jsonl", "run/", FitOptions(strategy="ekfac"))
    >>> result = score("run/", "queries.jsonl", out="out/", options=ScoreOptions(per_token=True))
    >>> result.scores  # [n_queries, n_sequences]; positive: the sequence raises log p(completion)

Both resume an interrupted run from its finished shards, and split the work across torchrun's processes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from wherefrom.curvature.fitting import fit_curvature
from wherefrom.curvature.store import FactorRun, check_compatible, load_run, save_run
from wherefrom.data.corpus import build_sequences, corpus_fingerprint
from wherefrom.data.queries import read_queries
from wherefrom.data.records import read_records
from wherefrom.engine.distributed import current_world
from wherefrom.engine.passes import Checkpoints
from wherefrom.errors import WherefromError
from wherefrom.models.loading import LoadedModel, load_model
from wherefrom.models.selection import select_layers
from wherefrom.options import FitOptions, ScoreOptions
from wherefrom.scoring.generation import complete_queries
from wherefrom.scoring.results import ScoreResult
from wherefrom.scoring.scorer import score as score_sequences
from wherefrom.solvers.damping import auto_damping, check_solver_options

SHARDS = ".shards"  # finished shards of an unfinished job, inside the run or output folder


def job_fingerprint(**parts: Any) -> str:
    """A hash of everything that determines a job's result (options, model, corpus, queries)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _finished_job(out: Path) -> str | None:
    """The job fingerprint of a finished score folder, if there is one."""
    manifest = out / "manifest.json"
    return json.loads(manifest.read_text()).get("job") if manifest.is_file() else None


def fit(model: str | Path | LoadedModel, corpus: str | Path, out: str | Path,
        options: FitOptions = FitOptions(), quiet: bool = False, restart: bool = False) -> FactorRun:
    """Fit per-layer curvature of ``model`` on ``corpus`` and save it in the run folder ``out``.

    Running the same fit again resumes it (or returns the finished run); other options, model or corpus are
    refused for an existing run folder unless ``restart``.
    """
    out = Path(out)
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    layers = select_layers(loaded.model, options.modules)
    sequences = build_sequences(read_records(corpus), loaded.tokenizer, options.max_length, options.pack)
    corpus_id = corpus_fingerprint(sequences)
    job = job_fingerprint(options={k: v for k, v in asdict(options).items() if k not in ("batch_size",)},
                          model=loaded.fingerprint, corpus=corpus_id)
    if (out / "manifest.json").is_file():
        finished = load_run(out)
        if finished.manifest.get("job") == job and not restart:
            return finished
        if not restart:
            raise WherefromError(f"{out} already holds factors fitted with other options, model or corpus; "
                                 "choose another --out, or add --restart to replace them.")
    world = current_world()
    checkpoints = Checkpoints(out / SHARDS, job)
    checkpoints.open(restart)
    curvature = fit_curvature(loaded.model, layers, sequences, options, quiet, checkpoints, world)
    if world.is_main:
        manifest_options = {**asdict(options), "corpus": str(Path(corpus).resolve())}
        save_run(out, curvature, layers, loaded.source, loaded.fingerprint, corpus_id, manifest_options, job)
        checkpoints.finish()
    world.barrier()
    return load_run(out)


def score(run: str | Path, queries: str | Path, corpus: str | Path | None = None, out: str | Path | None = None,
          options: ScoreOptions | None = None, model: str | Path | LoadedModel | None = None,
          quiet: bool = False, restart: bool = False) -> ScoreResult:
    """Score every sequence of ``corpus`` (default: the fitted corpus) against each query of ``queries``.

    ``options`` defaults to the run's own max_length, pack and batch_size. Results are saved in ``out`` when given;
    an interrupted scoring job with the same ``out`` resumes from its finished shards.
    """
    factors = load_run(Path(run))
    fitted = factors.manifest["options"]
    if options is None:
        options = ScoreOptions(max_length=fitted["max_length"], pack=fitted["pack"], batch_size=fitted["batch_size"],
                               shard_size=fitted["shard_size"])
    check_solver_options(options)
    if options.query_rank is not None and options.query_rank < 1:
        raise WherefromError(f"--query-rank must be at least 1, got {options.query_rank}.")
    source = model if model is not None else factors.manifest["model"]["source"]
    loaded = source if isinstance(source, LoadedModel) else load_model(source)
    layers = select_layers(loaded.model, fitted["modules"])
    check_compatible(factors, loaded.fingerprint, layers)
    query_list = complete_queries(loaded.model, loaded.tokenizer, read_queries(queries, loaded.tokenizer,
                                                                              options.max_length), options, quiet)
    corpus_path = corpus if corpus is not None else fitted["corpus"]
    sequences = build_sequences(read_records(corpus_path), loaded.tokenizer, options.max_length, options.pack)
    if options.damping == "auto":
        options = replace(options, damping=auto_damping(loaded.model, layers, factors.curvature, query_list, sequences,
                                                        options, quiet))
    job = job_fingerprint(options={k: v for k, v in asdict(options).items() if k not in ("batch_size", "top_k")},
                          run=factors.manifest["job"], corpus=corpus_fingerprint(sequences),
                          queries=[asdict(q) for q in query_list])
    if out is not None and not restart and _finished_job(Path(out)) == job:
        return ScoreResult.load(out)  # the same scoring already finished: nothing to recompute
    world = current_world()
    checkpoints = Checkpoints(None if out is None else Path(out) / SHARDS, job)
    checkpoints.open(restart)
    result = score_sequences(loaded.model, loaded.tokenizer, layers, factors.curvature, query_list, sequences,
                             options, quiet, checkpoints, world)
    result.metadata = {
        "strategy": factors.strategy,
        "fisher": fitted["fisher"],
        "damping": "0.1 x mean eigenvalue per layer" if options.damping is None else options.damping,
        "n_training_sequences_fitted": factors.curvature.n_sequences,
        "model": loaded.source,
        "corpus": str(corpus_path),
        "options": asdict(options),
        "job": job,
    }
    if out is not None and world.is_main:
        result.save(out, options.top_k)
        checkpoints.finish()
    world.barrier()
    return result
