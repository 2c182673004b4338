"""`wherefrom evaluate`'s output: recall@k and MRR per method as terminal tables, and everything as JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict

from rich.console import Console
from rich.table import Table

from wherefrom.analysis.retrieval import MethodEvaluation

EVALUATION_GENERATOR = "wherefrom evaluate"  # first key of the JSON: marks a file `evaluate --json` may replace


def headline_k(ks: Sequence[int]) -> int:
    """The k shown per group: 10 when evaluated, else the largest k."""
    return 10 if 10 in ks else max(ks)


def print_evaluation(evaluations: list[MethodEvaluation], console: Console | None = None) -> None:
    """One row per method (recall@k for each k, MRR); then, when the truth groups its queries, recall@k per group."""
    console = console or Console()
    ks = list(evaluations[0].recall)
    n_queries = len(evaluations[0].queries)
    table = Table(title=f"Finding the records that should be found ({n_queries} queries)", title_justify="left")
    table.add_column("method")
    for k in ks:
        table.add_column(f"recall@{k}", justify="right")
    table.add_column("MRR", justify="right")
    for evaluation in evaluations:
        table.add_row(evaluation.method, *(f"{evaluation.recall[k]:.2f}" for k in ks), f"{evaluation.mrr:.2f}")
    console.print(table)
    groups = list(dict.fromkeys(q.group for q in evaluations[0].queries))
    if groups == [None]:
        return
    k = headline_k(ks)
    by_group = Table(title=f"recall@{k} per group", title_justify="left")
    by_group.add_column("group")
    by_group.add_column("queries", justify="right")
    for evaluation in evaluations:
        by_group.add_column(evaluation.method, justify="right")
    for group in groups:
        parts = [evaluation.group(group) for evaluation in evaluations]
        by_group.add_row(str(group), str(len(parts[0].queries)), *(f"{part.recall[k]:.2f}" for part in parts))
    console.print(by_group)


def evaluation_json(evaluations: list[MethodEvaluation]) -> str:
    """Every method's means, per-group means and per-query ranks, recall@k and reciprocal rank, as JSON."""
    methods = []
    for evaluation in evaluations:
        groups = list(dict.fromkeys(q.group for q in evaluation.queries if q.group is not None))
        summary = asdict(evaluation)
        summary["groups"] = {g: {k: v for k, v in asdict(evaluation.group(g)).items() if k in ("recall", "mrr")}
                             for g in groups}
        methods.append(summary)
    return json.dumps({"generator": EVALUATION_GENERATOR, "methods": methods}, indent=2) + "\n"
