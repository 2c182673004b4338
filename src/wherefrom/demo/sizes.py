"""`wherefrom demo --sizes`: the study's scale finding in miniature.

The demo's synthetic world (one corpus, one recipe) trained at four model sizes spanning over 30x in parameters,
two training seeds each; each model fitted (EK-FAC) and scored (per layer) on the shipped queries, whose completions
are the planted facts, so every model explains the same answer; then `compare` over the eight score folders, with
the planted facts' carriers as the truth and each fact asked in English and in French as the query pairs.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from wherefrom.api import fit, score
from wherefrom.demo.recall import demo_truth
from wherefrom.demo.size_findings import findings
from wherefrom.demo.size_models import (
    FULL_SIZES,
    REDUCED_SIZES,
    Size,
    SizedModel,
    reduced_sizes_config,
    train_sizes,
    world_directory,
)
from wherefrom.fileio import atomic_write_text, jsonl_text, read_jsonl
from wherefrom.folders import claim_output
from wherefrom.options import ExecutionOptions, FitOptions, ScoreOptions
from wherefrom.outputs.report import write_report
from wherefrom.outputs.scale_section import scale_section
from wherefrom.scaling.compare import ScaleComparison, compare
from wherefrom.scoring.results import ScoreResult
from wherefrom.synthetic.cache import read_carriers
from wherefrom.synthetic.config import MAX_LENGTH, DemoConfig
from wherefrom.synthetic.training import cpu_threads

TOP_K = 10
COMPARISON = "compare.json"


@dataclass
class SizesSummary:
    """Where the comparison was written, what it found, and how long each stage took."""

    folder: str
    report: str
    json: str
    findings: list[str]
    accuracy: dict[str, dict[str, float]]  # model label → query kind → greedy accuracy
    seconds: dict[str, float] = field(default_factory=dict)


def run_sizes_demo(out: Path, reduced: bool = False, threads: int = 2, quiet: bool = False, say=print,  # type: ignore[no-untyped-def]
                   execution: ExecutionOptions = ExecutionOptions(), cache_root: Path | None = None,
                   base: DemoConfig | None = None, sizes: tuple[Size, ...] | None = None, bootstraps: int = 100
                   ) -> tuple[SizesSummary, ScaleComparison]:
    """Train (or reuse), fit, score and compare every size and seed into ``out`` (locked meanwhile). ``base``
    and ``sizes`` replace the world and the sizes that ``reduced`` chooses; ``bootstraps``: the report's tail fits'
    bootstrap samples."""
    base = base or (reduced_sizes_config() if reduced else DemoConfig())
    sizes = sizes or (REDUCED_SIZES if reduced else FULL_SIZES)
    with claim_output(out, "demo"):
        seconds: dict[str, float] = {}
        clock = time.perf_counter()
        models = train_sizes(base, sizes, cache_root, threads, quiet, say)
        seconds["train"] = time.perf_counter() - clock
        world = world_directory(base, sizes, cache_root)
        clock = time.perf_counter()
        folders = [fit_and_score(model.label, model.folder, world, out, quiet, say, execution, threads)
                   for model in models]
        seconds["fit and score"] = time.perf_counter() - clock
        clock = time.perf_counter()
        truth, pairs = truth_and_pairs(world, out)
        say("comparing the score folders")
        comparison = compare(folders, k=TOP_K, truth=truth, pairs=pairs)
        accuracy = {m.label: {kind: v["accuracy"] for kind, v in _trained(m)["accuracy"].items()} for m in models}
        found = [_accuracy(accuracy)] + findings(comparison, [m.size.name for m in models]) + [_base_rate(world)]
        seconds["compare"] = time.perf_counter() - clock
        clock = time.perf_counter()
        report = write_outputs(comparison, found, folders[-1], out, "wherefrom demo: influence across model sizes",
                               bootstraps)
        seconds["report"] = time.perf_counter() - clock
        summary = SizesSummary(str(out), str(report), str(out / COMPARISON), found, accuracy, seconds)
        atomic_write_text(out / "summary.json", json.dumps(asdict(summary), indent=2, ensure_ascii=False) + "\n")
        return summary, comparison


def fit_and_score(label: str, model: Path, world: Path, out: Path, quiet: bool, say,  # type: ignore[no-untyped-def]
                  execution: ExecutionOptions, threads: int) -> Path:
    """Fit EK-FAC for ``model`` on the world's corpus and score its queries per layer, with ``threads`` CPU threads
    (as the model was trained): ``out/scores/label``."""
    say(f"fitting and scoring {label}")
    run, scores = out / "runs" / label, out / "scores" / label
    with cpu_threads(threads):
        fit(model, world / "corpus.jsonl", run, FitOptions(strategy="ekfac", max_length=MAX_LENGTH, batch_size=32),
            quiet, execution=execution)
        score(run, world / "queries.jsonl", out=scores, quiet=quiet, execution=execution,
              options=ScoreOptions(max_length=MAX_LENGTH, batch_size=32, per_layer=True))
    return scores


def write_outputs(comparison: ScaleComparison, findings: list[str], last: Path, out: Path, title: str,
                  bootstraps: int) -> Path:
    """``out/compare.json`` (with the findings) and ``out/report.html``: the report of the ``last`` score folder (the
    largest model or the latest checkpoint) with the comparison's section. Returns the report's path."""
    atomic_write_text(out / COMPARISON, comparison.to_json(findings))
    return write_report(ScoreResult.load(last), out / "report.html", TOP_K, f"{title} (report of {last.name})",
                        n_bootstrap=bootstraps, scale=scale_section(comparison, findings))


def truth_and_pairs(world: Path, out: Path) -> tuple[Path, Path]:
    """truth.jsonl (each query's fact carriers) and pairs.txt (each fact asked in English, then in French)."""
    rows = read_jsonl(world / "queries.jsonl")
    truths = demo_truth(rows, read_carriers(world))
    atomic_write_text(out / "truth.jsonl", jsonl_text(
        {"query_id": t.query_id, "record_ids": list(t.record_ids), "group": t.group} for t in truths))
    ids = {row["id"] for row in rows}
    lines = [f"training_wording-{row['fact']} {row['id']} en fr\n" for row in rows
             if row["kind"] == "french" and f"training_wording-{row['fact']}" in ids]
    atomic_write_text(out / "pairs.txt", "".join(lines))
    return out / "truth.jsonl", out / "pairs.txt"


def _accuracy(accuracy: dict[str, dict[str, float]]) -> str:
    """Whether the models know the facts at all: greedy accuracy per model on two query kinds."""
    kinds = ("training_wording", "french")
    cells = "; ".join(label + " " + " / ".join(f"{values.get(k, math.nan):.0%}" for k in kinds)
                      for label, values in accuracy.items())
    return f"Greedy accuracy on the facts asked in training wording / in French (every query): {cells}."


def _base_rate(world: Path) -> str:
    """How much of the corpus is in another language than the French queries: the other-language share's floor."""
    languages = [row.get("language") for row in read_jsonl(world / "corpus.jsonl")]
    other = sum(lang != "fr" for lang in languages) / len(languages)
    return (f"For scale: {other:.0%} of the {len(languages)} documents are not in French, so a model that drew on "
            f"all documents alike would give the French queries an other-language share near {other:.2f}.")


def _trained(model: SizedModel) -> dict:
    return json.loads((model.folder / "training.json").read_text(encoding="utf-8"))
