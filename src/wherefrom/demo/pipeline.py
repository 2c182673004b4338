"""`wherefrom demo`: train (or reuse) the demo model, fit, score every query against the corpus, check the
answers against the planted ground truth (`wherefrom evaluate`, BM25 beside every method), and write the report."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from wherefrom.analysis.fact_tracing import evaluate_folders
from wherefrom.api import fit, score
from wherefrom.demo.experts import expert_findings
from wherefrom.demo.neurons import TOP_UNITS, neuron_findings
from wherefrom.demo.recall import KindRecall, demo_truth, recall_by_kind
from wherefrom.fileio import atomic_write_text, jsonl_text, read_jsonl
from wherefrom.folders import claim_output
from wherefrom.index import build_index
from wherefrom.options import ExecutionOptions, FitOptions, IndexOptions, ScoreOptions
from wherefrom.outputs.evaluation_table import evaluation_json
from wherefrom.outputs.report import write_report
from wherefrom.synthetic.cache import load_or_train, read_carriers, read_manifest
from wherefrom.synthetic.config import MAX_LENGTH, DemoConfig

STRATEGIES = ("ekfac", "identity")  # EK-FAC against the plain gradient dot product
RECALL_K = 10
TOKEN_SHARES = 20  # sequences per query split per token: every one results.jsonl lists (top 20), the report shows 10
SMOLLM2_DOCUMENTS = 64  # pydoc topics, each cut to MAX_LENGTH tokens: a few minutes of CPU for a 135M model


@dataclass
class DemoSummary:
    """What the demo measured: model accuracy and recall@10 per query kind and method, timings, paths."""

    model_dir: str
    report: str
    accuracy: dict[str, float]
    recall: dict[str, list[KindRecall]]
    seconds: dict[str, float] = field(default_factory=dict)
    neurons: str | None = None  # concentration in MLP neurons, and English vs French (demo/neurons.py)
    experts: str | None = None  # with --moe: concentration in experts, and English vs French (demo/experts.py)


def run_demo(out: Path, config: DemoConfig | None = None, threads: int = 2, quiet: bool = False,
             bootstraps: int = 100, execution: ExecutionOptions = ExecutionOptions()) -> DemoSummary:
    """Run the whole demo into ``out`` (locked meanwhile); every stage reuses its finished output from an earlier
    run. The demo model is trained on the CPU; fit, score and index run where ``execution`` says."""
    with claim_output(out, "demo"):
        return _run_demo(out, config, threads, quiet, bootstraps, execution)


def _run_demo(out: Path, config: DemoConfig | None, threads: int, quiet: bool, bootstraps: int,
              execution: ExecutionOptions) -> DemoSummary:
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    model_dir = load_or_train(config, num_threads=threads, quiet=quiet)
    seconds["model"] = time.perf_counter() - clock
    corpus, queries = model_dir / "corpus.jsonl", model_dir / "queries.jsonl"
    query_rows = read_jsonl(queries)
    facts = {row["id"]: row["fact"] for row in query_rows}
    kinds = {row["id"]: row["kind"] for row in query_rows}
    results, folders = {}, {}
    for strategy in STRATEGIES:
        clock = time.perf_counter()
        run = out / f"run-{strategy}"
        fit(model_dir, corpus, run, FitOptions(strategy=strategy, max_length=MAX_LENGTH, batch_size=32), quiet,
            execution=execution)
        seconds[f"fit {strategy}"] = time.perf_counter() - clock
        clock = time.perf_counter()
        detailed = strategy == STRATEGIES[0]  # per-layer and per-token scores for the report's strategy
        options = ScoreOptions(max_length=MAX_LENGTH, batch_size=32, per_layer=detailed, per_token=detailed,
                               per_token_top=TOKEN_SHARES if detailed else None, normalize=True,
                               per_unit=TOP_UNITS if detailed else None)
        folders[strategy] = out / f"scores-{strategy}"
        results[strategy] = score(run, queries, out=folders[strategy], options=options, quiet=quiet,
                                  execution=execution)
        seconds[f"score {strategy}"] = time.perf_counter() - clock
    clock = time.perf_counter()
    build_index(out / f"run-{STRATEGIES[0]}", out / "index", options=IndexOptions(max_length=MAX_LENGTH, batch_size=32),
                quiet=quiet, execution_options=execution)  # what `wherefrom serve` answers new questions from
    folders["index"] = out / "scores-index"
    score(out / f"run-{STRATEGIES[0]}", queries, out=folders["index"], index=out / "index", quiet=quiet,
          options=ScoreOptions(max_length=MAX_LENGTH, batch_size=32, normalize=True, rescore=0),
          execution=execution)  # the index alone
    seconds["index"] = time.perf_counter() - clock
    clock = time.perf_counter()
    recall = evaluate_demo(out, model_dir, {"ekfac": folders["ekfac"], "index": folders["index"],
                                            "identity": folders["identity"]})
    seconds["evaluate"] = time.perf_counter() - clock
    clock = time.perf_counter()
    report = write_report(replace(results[STRATEGIES[0]], cosine=None), out / "report.html",  # ranked by influence
                          title="wherefrom demo: where do the facts come from?", n_bootstrap=bootstraps)
    seconds["report"] = time.perf_counter() - clock
    accuracy = {kind: values["accuracy"] for kind, values in read_manifest(model_dir)["accuracy"].items()}
    findings = neuron_findings(results[STRATEGIES[0]], kinds, facts)
    experts = expert_findings(results[STRATEGIES[0]], kinds, facts)
    summary = DemoSummary(str(model_dir), str(report), accuracy, recall, seconds,
                          None if findings is None else findings.statement(),
                          None if experts is None else experts.statement())
    atomic_write_text(out / "summary.json", json.dumps(asdict(summary), indent=2) + "\n")
    return summary


def evaluate_demo(out: Path, model_dir: Path, folders: dict[str, Path]) -> dict[str, list[KindRecall]]:
    """`wherefrom evaluate` of the demo's score folders against the planted facts' carriers: writes
    ``truth.jsonl`` and ``evaluation.json`` into ``out``; returns recall@10 per method and query kind."""
    truths = demo_truth(read_jsonl(model_dir / "queries.jsonl"), read_carriers(model_dir))
    atomic_write_text(out / "truth.jsonl", jsonl_text(
        {"query_id": t.query_id, "record_ids": list(t.record_ids), "group": t.group} for t in truths))
    evaluations = evaluate_folders(folders, truths, (RECALL_K,))
    atomic_write_text(out / "evaluation.json", evaluation_json(evaluations))
    return {evaluation.method: recall_by_kind(evaluation, RECALL_K) for evaluation in evaluations}


def run_smollm2_demo(out: Path, cache_root: Path, quiet: bool = False, bootstraps: int = 100,
                     execution: ExecutionOptions = ExecutionOptions()) -> tuple[Path, object]:
    """The demo pipeline on SmolLM2-135M-Instruct over Python's documentation, prompts completed by the model.

    Returns the report's path and the score result (for the terminal summary).
    """
    with claim_output(out, "demo"):
        return _run_smollm2_demo(out, cache_root, quiet, bootstraps, execution)


def _run_smollm2_demo(out: Path, cache_root: Path, quiet: bool, bootstraps: int,
                      execution: ExecutionOptions) -> tuple[Path, object]:
    from wherefrom.demo import smollm2

    model, corpus, queries = smollm2.prepare(cache_root / "smollm2", documents=SMOLLM2_DOCUMENTS)
    run = out / "run-ekfac"
    fit(model, corpus, run, FitOptions(max_length=MAX_LENGTH, batch_size=8), quiet, execution=execution)
    options = ScoreOptions(max_length=MAX_LENGTH, batch_size=8, per_layer=True, per_token=True, max_new_tokens=16,
                           stop="sentence")
    result = score(run, queries, out=out / "scores-ekfac", options=options, quiet=quiet, execution=execution)
    report = write_report(result, out / "report.html", title="wherefrom demo: SmolLM2 on Python's documentation",
                          n_bootstrap=bootstraps)
    return report, result
