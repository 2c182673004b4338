"""The Python API: fit curvature on a corpus, then score queries against training sequences.

    >>> from wherefrom import fit, score, FitOptions, ScoreOptions
    >>> fit("my-model/", "corpus.jsonl", "run/", FitOptions(strategy="ekfac"))
    >>> result = score("run/", "queries.jsonl", out="out/", options=ScoreOptions(per_token=True))
    >>> result.scores  # [n_queries, n_sequences]; positive: the sequence raises log p(completion)

Both resume an interrupted run from its finished shards, and split the work across torchrun's processes.
"""

from __future__ import annotations

import time
from dataclasses import asdict, fields, replace
from pathlib import Path

import torch

from wherefrom.curvature.blocks import factor_sum_bytes
from wherefrom.curvature.fitting import fit_curvature
from wherefrom.curvature.opening import open_run
from wherefrom.curvature.store import FactorRun, load_run, save_run
from wherefrom.data.corpus import TrainingSequence, build_sequences, corpus_fingerprint
from wherefrom.data.queries import Query, read_queries
from wherefrom.data.records import read_records
from wherefrom.engine.distributed import is_first_rank
from wherefrom.engine.execution import Execution, dtype_name, load_for_execution, start_execution
from wherefrom.engine.passes import Checkpoints
from wherefrom.errors import WherefromError
from wherefrom.folders import claim_output, finished_job
from wherefrom.index.answers import index_ranking, index_result
from wherefrom.index.store import GradientIndex, check_index_matches
from wherefrom.jobs import job_fingerprint
from wherefrom.models.coverage import coverage
from wherefrom.models.loading import LoadedModel
from wherefrom.models.positions import cap_max_length
from wherefrom.models.selection import TrackedLayer, select_layers
from wherefrom.models.units import find_unit, unit_map
from wherefrom.options import ExecutionOptions, FitOptions, ScoreOptions
from wherefrom.progress import note
from wherefrom.scoring.columns import bm25_rows, top_rows
from wherefrom.scoring.generation import complete_queries
from wherefrom.scoring.query_gradients import query_gradients
from wherefrom.scoring.results import ScoreResult
from wherefrom.scoring.scorer import score as score_sequences
from wherefrom.solvers.damping import auto_damping, check_solver_options
from wherefrom.solvers.refine import query_preconditioner

SHARDS = ".shards"  # finished shards of an unfinished job, inside the run or output folder


def fit(model: str | Path | LoadedModel, corpus: str | Path, out: str | Path,
        options: FitOptions = FitOptions(), quiet: bool = False, restart: bool = False,
        execution: ExecutionOptions = ExecutionOptions(), allow_pickle: bool = False) -> FactorRun:
    """Fit per-layer curvature of ``model`` on ``corpus`` and save it in the run folder ``out``.

    Running the same fit again resumes it (or returns the finished run); other options, model or corpus are
    refused for an existing run folder unless ``restart``. ``execution``: device, dtype and factor placement (a
    :class:`LoadedModel` runs where it already is). ``allow_pickle`` lets a model stored as pickle load. The
    folder is locked while the fit writes into it.
    """
    out, start = Path(out), time.perf_counter()
    model_path = model.source if isinstance(model, LoadedModel) else model
    with claim_output(out, "run", [model_path, corpus], lock=is_first_rank()):
        loaded = model if isinstance(model, LoadedModel) else load_for_execution(model, execution,
                                                                                 allow_pickle=allow_pickle)
        options = replace(options, max_length=cap_max_length(loaded.model, options.max_length, quiet))
        layers = select_layers(loaded.model, options.modules)
        covered = coverage(loaded.model, layers)
        note(covered.summary(), quiet)
        sequences = build_sequences(read_records(corpus), loaded.tokenizer, options.max_length, options.pack)
        corpus_id = corpus_fingerprint(sequences)
        running = start_execution(loaded.model, execution,
                                  factor_sum_bytes(layers, options.factor_blocks, torch.float32))
        # Dense float32 factors (factor_blocks 1) hash as before those options existed: earlier run folders stay valid.
        identity = {k: v for k, v in asdict(options).items() if k != "batch_size" and (k, v) != ("factor_blocks", 1)}
        job = job_fingerprint(options={**identity, **_dtype_identity(running)}, model=loaded.fingerprint,
                              corpus=corpus_id)
        finished = finished_job(out)
        if finished == job and not restart:
            Checkpoints(out / SHARDS, job).finish_stopped()
            return load_run(out)
        if finished is not None and not restart:
            raise WherefromError(f"{out} already holds factors fitted with other options, model or corpus; "
                                 "choose another --out, or add --restart to replace them.")
        world = running.world
        checkpoints = Checkpoints(out / SHARDS, job)
        checkpoints.open(restart, world)
        curvature = fit_curvature(loaded.model, layers, sequences, options, quiet, checkpoints, running)
        if world.is_main:
            manifest_options = {**asdict(options), "corpus": str(Path(corpus).resolve())}
            (out / "manifest.json").unlink(missing_ok=True)  # an earlier run's manifest never describes new factors
            save_run(out, curvature, layers, loaded.source, loaded.fingerprint, corpus_id, manifest_options, job,
                     seconds=time.perf_counter() - start, execution=running.describe(), allow_pickle=allow_pickle,
                     coverage=covered.to_json())
            checkpoints.finish()
        world.barrier()
        return load_run(out)


def _dtype_identity(execution: Execution) -> dict[str, str]:
    """The model dtype as part of a job's identity (float32, the only dtype before --dtype, adds nothing)."""
    return {} if execution.dtype == torch.float32 else {"dtype": dtype_name(execution.dtype)}


def score(run: str | Path | None, queries: str | Path, corpus: str | Path | None = None,
          out: str | Path | None = None, options: ScoreOptions | None = None,
          model: str | Path | LoadedModel | None = None, quiet: bool = False, restart: bool = False,
          index: str | Path | None = None, execution: ExecutionOptions = ExecutionOptions()) -> ScoreResult:
    """Score every sequence of ``corpus`` (default: the fitted corpus) against each query of ``queries``.

    ``options`` defaults to the run's own max_length, pack and batch_size. With ``index`` (a folder written by
    `wherefrom index`) the index's top ``options.rescore`` sequences per query (default 100) are scored exactly,
    with no pass over the rest of the corpus; ``rescore=0`` gives the index's own scores of every sequence. The
    index remembers its run and corpus, so ``run`` (None) and ``corpus`` only override them. Results are saved in
    ``out`` when given (locked meanwhile); an interrupted scoring job with the same ``out`` resumes from its
    finished shards, and a finished folder of another scoring is refused unless ``restart``.
    ``execution``: device and dtype (dtype 'auto': the one the run was fitted in).
    """
    if out is None:
        return _score(run, queries, corpus, None, options, model, quiet, restart, index, execution)
    model_path = model.source if isinstance(model, LoadedModel) else model
    with claim_output(Path(out), "scores", [run, queries, corpus, index, model_path], lock=is_first_rank()):
        return _score(run, queries, corpus, Path(out), options, model, quiet, restart, index, execution)


def _score(run: str | Path | None, queries: str | Path, corpus: str | Path | None, out: Path | None,
           options: ScoreOptions | None, model: str | Path | LoadedModel | None, quiet: bool, restart: bool,
           index: str | Path | None, execution: ExecutionOptions) -> ScoreResult:
    gradient_index = None if index is None else GradientIndex.open(index)
    if run is None and gradient_index is None:
        raise WherefromError("give a fitted run folder (`wherefrom fit`), or an index (`wherefrom index`) that names one.")
    opened = open_run(run if run is not None else gradient_index.run_folder, model, execution)
    fitted = opened.fitted
    if options is None:  # the index's data options when there is one (the sequences it holds), else the run's
        options = ScoreOptions(**(opened.data if gradient_index is None else
                                  {name: gradient_index.manifest["options"][name] for name in opened.data}))
    check_solver_options(options)
    _check_score_options(options, index is not None)
    loaded, layers, factors = opened.loaded, opened.layers, opened.factors
    options = replace(options, max_length=cap_max_length(loaded.model, options.max_length, quiet))
    if options.per_unit:
        unit_map(loaded.model, layers, options.unit_view)  # a view with no unit is refused before anything is written
    running = start_execution(loaded.model, execution)
    run_dir = opened.folder
    corpus_path = opened.corpus_path(corpus or (gradient_index.manifest["corpus"] if gradient_index else None))
    sequences = opened.sequences(corpus_path, options.max_length, options.pack)
    if gradient_index is not None:
        check_index_matches(gradient_index, factors, corpus_fingerprint(sequences))
        gradient_index = gradient_index.to(running.device)  # contracted where the model runs
    query_list = complete_queries(loaded.model, loaded.tokenizer, read_queries(queries, loaded.tokenizer,
                                                                              options.max_length), options, quiet)
    if options.damping == "auto":
        options = replace(options, damping=auto_damping(loaded.model, layers, factors.curvature, query_list, sequences,
                                                        options, quiet))
    job = job_fingerprint(options={**{k: v for k, v in asdict(options).items() if k not in ("batch_size", "top_k")},
                                   **_dtype_identity(running)},
                          run=factors.manifest["job"], corpus=corpus_fingerprint(sequences),
                          queries=[asdict(q) for q in query_list],
                          index=None if gradient_index is None else gradient_index.manifest["job"])
    finished = None if out is None else finished_job(out)
    if finished == job and not restart:
        Checkpoints(out / SHARDS, job).finish_stopped()
        return ScoreResult.load(out)  # the same scoring already finished: nothing to recompute
    if finished is not None and not restart:
        raise WherefromError(f"{out} already holds the scores of another scoring (other run, queries, corpus or "
                             "options); choose another --out, or add --restart to replace them.")
    world = running.world
    checkpoints = Checkpoints(None if out is None else out / SHARDS, job)
    checkpoints.open(restart, world)
    result = _score_columns(loaded, layers, factors, query_list, sequences, options, gradient_index,
                            run_dir, quiet, checkpoints, running)
    result.metadata = {
        "strategy": factors.strategy,
        "fisher": fitted["fisher"],
        "damping": "0.1 x mean eigenvalue per layer" if options.damping is None else options.damping,
        "n_training_sequences_fitted": factors.curvature.n_sequences,
        "model": loaded.source,
        "corpus": str(corpus_path),
        "columns": _columns_note(options, gradient_index, len(result.sequences), len(sequences)),
        "options": asdict(options),
        "execution": running.describe(),
        "job": job,
        "run": str(run_dir.resolve()),
    }
    if out is not None and world.is_main:
        result.save(out, options.top_k)
        checkpoints.finish()
    world.barrier()
    return result


def units(out: str | Path, unit: str, among: int | None = None, model: str | Path | LoadedModel | None = None,
          save: str | Path | None = None, quiet: bool = False) -> ScoreResult:
    """Rank the sequences of the score folder ``out`` by the influence that flows through one ``unit`` (a neuron
    ``model.layers.3.mlp:17`` or ``3:17``, a head ``3:head2``, a residual dimension ``model.layers.3:dim5``).

    The result is a score result whose scores, per-layer and per-token splits are the unit's. It costs one pass
    over the folder's scored sequences (no refit; the query gradients are recomputed), or over only each query's
    ``among`` best sequences by the saved scores. Saved in ``save`` when given.
    """
    scored = ScoreResult.load(out)
    recorded = scored.metadata
    if "run" not in recorded:
        raise WherefromError(f"{out} does not name its run folder (written by an older wherefrom): score it again.")
    known = {f.name for f in fields(ScoreOptions)}
    # The influence through one unit, whatever the scoring ranked by: a unit's share has no cosine of its own.
    options = replace(ScoreOptions(**{k: v for k, v in recorded["options"].items() if k in known}),
                      per_token=True, per_token_top=None, per_layer=True, per_unit=None, self_influence=False,
                      normalize=False)
    opened = open_run(recorded["run"], model if model is not None else recorded["model"])
    find_unit(opened.loaded.model, opened.layers, unit)  # a unit the model does not have is refused before any pass
    corpus = {s.row: s for s in opened.sequences(recorded["corpus"], options.max_length, options.pack)}
    columns = range(len(scored.sequences)) if among is None else top_rows(scored.ranking, among)
    sequences = [corpus[scored.sequences[c].row] for c in columns]
    queries = [Query(q.query_id, q.prompt, q.completion, tuple(q.prompt_ids), tuple(q.completion_ids))
               for q in scored.queries]
    precondition = query_preconditioner(opened.loaded.model, opened.layers, opened.curvature, sequences, options,
                                        quiet)
    result = score_sequences(opened.loaded.model, opened.loaded.tokenizer, opened.layers, opened.curvature, queries,
                             sequences, options, quiet, precondition=precondition, unit=unit)
    result.metadata = {**{k: v for k, v in recorded.items() if k != "job"}, "unit": unit,
                       "score_folder": str(Path(out).resolve()),
                       "columns": f"{len(sequences)} of the {len(scored.sequences)} sequences scored in {out}"}
    if save is not None:
        model_path = model.source if isinstance(model, LoadedModel) else model
        with claim_output(Path(save), "scores", [out, model_path]):
            if finished_job(Path(save)) is not None:  # a scoring's own folder (a unit ranking records no job)
                raise WherefromError(f"{save} holds the scores of a scoring; save the unit ranking in another "
                                     "folder.")
            result.save(save, options.top_k)
    return result


def _check_score_options(options: ScoreOptions, with_index: bool) -> None:
    for flag, value in (("--top-k", options.top_k), ("--max-new-tokens", options.max_new_tokens)):
        if value < 1:
            raise WherefromError(f"{flag} must be at least 1, got {value}.")
    if options.temperature <= 0 or not 0 < options.top_p <= 1:
        raise WherefromError(f"--temperature must be above 0 and --top-p in (0, 1]; got {options.temperature} and "
                             f"{options.top_p}.")
    if options.per_unit is not None and options.per_unit < 1:
        raise WherefromError(f"--per-unit must be at least 1, got {options.per_unit}.")
    if options.per_token_top is not None and not options.per_token:
        raise WherefromError("--per-token-top N says which sequences keep token shares: give --per-token too.")
    if options.per_token_top is not None and options.per_token_top < 1:
        raise WherefromError(f"--per-token-top must be at least 1, got {options.per_token_top}.")
    if options.per_unit is not None and with_index and options.rescored_per_query == 0:
        raise WherefromError("--per-unit splits exact scores; with --index it needs --rescore N (N ≥ 1).")
    if options.query_rank is not None and options.query_rank < 1:
        raise WherefromError(f"--query-rank must be at least 1, got {options.query_rank}.")
    if options.rescore is not None and not with_index:
        raise WherefromError("--rescore re-scores the top of an index's ranking: give --index INDEX too.")
    if options.rescore is not None and options.rescore < 0:
        raise WherefromError(f"--rescore must be 0 (the index's own scores) or more, got {options.rescore}.")
    if options.refine != "none" and with_index and options.rescored_per_query == 0:
        raise WherefromError("--refine improves exact scoring; with --index it needs --rescore N (N ≥ 1).")
    if options.candidates is not None and with_index:
        raise WherefromError("--candidates and --index both choose which sequences to score: use one of them.")


def _score_columns(loaded: LoadedModel, layers: list[TrackedLayer], factors: FactorRun, queries: list[Query],
                   sequences: list[TrainingSequence], options: ScoreOptions, index: GradientIndex | None,
                   run_dir: Path, quiet: bool, checkpoints: Checkpoints, execution: Execution) -> ScoreResult:
    """Score the columns the options choose: all sequences, BM25 candidates, or an index's (re-scored) top."""
    gradients, rows = None, None
    if options.candidates is not None:
        rows = bm25_rows(sequences, queries, options.candidates, run_dir)
    elif index is not None:
        gradients = query_gradients(loaded.model, layers, queries, options.batch_size,
                                    quiet or not execution.world.is_main, execution)
        if options.rescored_per_query == 0:
            return index_result(index, gradients, queries, sequences, loaded.tokenizer, options, factors.curvature)
        rows = top_rows(index_ranking(index, gradients, factors.curvature, options), options.rescored_per_query)
    chosen = sequences if rows is None else [sequences[r] for r in rows]
    precondition = query_preconditioner(loaded.model, layers, factors.curvature, chosen, options,
                                        quiet or not execution.world.is_main, execution)
    return score_sequences(loaded.model, loaded.tokenizer, layers, factors.curvature, queries, chosen, options,
                           quiet, checkpoints, execution, gradients, precondition)


def _columns_note(options: ScoreOptions, index: GradientIndex | None, n_scored: int, n_corpus: int) -> str:
    """In words, which sequences the score columns are."""
    if options.candidates is not None:
        return f"{n_scored} of {n_corpus} sequences: the union of each query's top {options.candidates} by BM25"
    if index is not None and options.rescored_per_query > 0:
        return (f"{n_scored} of {n_corpus} sequences: the union of each query's top {options.rescored_per_query} by the "
                "gradient index, scored exactly")
    if index is not None:
        return (f"all {n_corpus} sequences, scored from the gradient index "
                f"({index.manifest['bytes_per_sequence']:,} bytes per sequence)")
    return f"all {n_corpus} sequences"
