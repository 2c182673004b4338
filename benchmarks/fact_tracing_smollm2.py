"""Why a fact's own carrier can rank last (issue 19, part 3): SmolLM2-135M + LoRA on benchmarks/fact_world.py's
238 documents, scored by `wherefrom fit`/`score`/`index`/`evaluate`, then each hypothesis measured over all 36
carriers of the 12 facts.

Stages (each skipped when its output exists under --out, default bench-work/fact-tracing):
  1. the world and the LoRA fine-tune (fact_world.fine_tune), with greedy completion accuracy before/after;
  2. `wherefrom fit` on the adapter folder; `score --normalize --per-layer --per-token --self-influence`;
     with --index, `index` and `score --index --rescore 0 --normalize` (the index alone); with --refine,
     `score --refine cg` (EK-FAC refined towards the true damped Gauss-Newton Hessian); with --all-linear, a fit
     and score tracking the attention's adapters too; `evaluate` of all of them against truth.jsonl;
  3. the analysis: every carrier's rank and its split per token (the answer's tokens, the subject's tokens, the
     rest), per module, its fit (log p of its answer tokens) and wording; an independent autograd recomputation
     of the EK-FAC scores at five dampings and of the gradient dot product; a finite-difference check of the
     sign (log p of the completion after a small preconditioned step on one document).

Writes benchmarks/results/fact-tracing-smollm2.{json,md}.

Run: PYTHONPATH=src flock /tmp/wherefrom-heavy.lock python benchmarks/fact_tracing_smollm2.py [--threads 2]
[--index] [--all-linear] [--carriers-only] (the last: the autograd recomputation for the 36 carriers only)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.fact_world import FactWorld, FineTuneOptions, base_model, build_world, fine_tune  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
DAMPING_FACTORS = (0.001, 0.01, 0.1, 1.0, 10.0)  # × mean Λ per layer; 0.1 is the default


def cli(log: list[dict], *args: str) -> None:
    """Run `python -m wherefrom ARGS` (quiet, but for `evaluate`, which has no progress), timed, failing loudly."""
    start = time.perf_counter()
    quiet = () if args[0] == "evaluate" else ("-q",)
    done = subprocess.run([sys.executable, "-m", "wherefrom", *args, *quiet], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"wherefrom {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    log.append({"command": "wherefrom " + " ".join(args), "seconds": round(time.perf_counter() - start, 1)})
    print(f"{log[-1]['seconds']:7.1f} s  {log[-1]['command']}", flush=True)


def pipeline(out: Path, world: FactWorld, options: FineTuneOptions, index: bool, refine: bool, all_linear: bool
             ) -> dict:
    """Stages 1 and 2 (``index``: also the gradient index and its scores; ``refine``: also `score --refine cg`;
    ``all_linear``: also a fit and score tracking the attention's adapters too, `--modules all-linear`); returns
    the fine-tune report and the commands with their times."""
    files = world.write(out)
    adapter = out / "adapter"
    report_path = out / "fine-tune.json"
    if not report_path.is_file():
        report = fine_tune(world, base_model(REPO / "bench-work"), adapter, options)
        report_path.write_text(json.dumps(asdict(report), indent=1) + "\n")
    log: list[dict] = []
    run, scores = out / "run", out / "scores-ekfac"
    steps = [
        (run / "manifest.json", ("fit", "--model", str(adapter), "--corpus", str(files.corpus), "--out", str(run))),
        (scores / "scores.safetensors", ("score", "--run", str(run), "--queries", str(files.queries), "--out",
                                         str(scores), "--normalize", "--per-layer", "--per-token", "--self-influence")),
    ]
    if index:
        steps += [(out / "index" / "manifest.json", ("index", "--run", str(run), "--out", str(out / "index"))),
                  (out / "scores-index" / "scores.safetensors", ("score", "--index", str(out / "index"), "--queries",
                                                                 str(files.queries), "--out", str(out / "scores-index"),
                                                                 "--rescore", "0", "--normalize"))]
    if refine:
        steps.append((out / "scores-cg" / "scores.safetensors", (
            "score", "--run", str(run), "--queries", str(files.queries), "--out", str(out / "scores-cg"),
            "--refine", "cg", "--refine-sample", "32", "--refine-iterations", "5")))
    if all_linear:
        steps += [(out / "run-all" / "manifest.json", ("fit", "--model", str(adapter), "--corpus", str(files.corpus),
                                                       "--out", str(out / "run-all"), "--modules", "all-linear")),
                  (out / "scores-all" / "scores.safetensors", ("score", "--run", str(out / "run-all"), "--queries",
                                                               str(files.queries), "--out", str(out / "scores-all"),
                                                               "--normalize"))]
    for done, args in steps:
        if not done.exists():
            cli(log, *args)
    folders = [scores] + ([out / "scores-index"] if index else []) + ([out / "scores-cg"] if refine else []) + \
        ([out / "scores-all"] if all_linear else [])
    cli(log, "evaluate", *(a for f in folders for a in ("--scores", str(f))), "--truth", str(files.truth),
        "--k", "1", "--k", "5", "--k", "10", "--json", str(out / "evaluation.json"))
    return {"fine_tune": json.loads(report_path.read_text()), "commands": log}


# ---- the analysis ----------------------------------------------------------------------------------------------

def find_span(ids: list[int], span: list[int]) -> list[int]:
    """Positions of the last occurrence of ``span`` in ``ids`` (empty when absent)."""
    for start in range(len(ids) - len(span), -1, -1):
        if ids[start:start + len(span)] == span:
            return list(range(start, start + len(span)))
    return []


def rank_of(scores: torch.Tensor, column: int) -> int:
    """1 + the number of columns scored strictly higher."""
    return 1 + int((scores > scores[column]).sum())


def token_log_probs(model: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    """log p(ids[t] | ids[<t]) for t ≥ 1."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].double()
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]


def module_kind(layer_name: str) -> str:
    """'gate_proj.lora_A' for '...mlp.gate_proj.lora_A.default'."""
    parts = layer_name.split(".")
    at = next(i for i, p in enumerate(parts) if p.startswith("lora_"))
    return f"{parts[at - 1]}.{parts[at]}"


def carrier_rows(world: FactWorld, result, model, tokenizer) -> list[dict]:
    """One row per (query, carrier): ranks, the per-token split of its score, its fit, its wording."""
    column = {s.record_id: s.row for s in result.sequences}
    kinds = [module_kind(n) for n in result.layer_names]
    rows = []
    for q in result.queries:
        query = world.queries[q.index]
        fact = world.corpus.fact(query.fact)
        for record in world.carriers(query):
            document = next(d for d in world.corpus.documents if d.id == record)
            col = column[record]
            ids = tokenizer(document.text, add_special_tokens=True)["input_ids"]
            tokens = result.token_scores(q.index, col).double()
            answer = find_span(ids, list(q.completion_ids))
            subject = find_span(ids, tokenizer(" " + fact.subject, add_special_tokens=False)["input_ids"]) or \
                find_span(ids, tokenizer(fact.subject, add_special_tokens=False)["input_ids"])
            logp = token_log_probs(model, ids)
            per_module: dict[str, float] = {}
            for kind, value in zip(kinds, result.per_layer[:, q.index, col].double().tolist(), strict=True):
                per_module[kind] = per_module.get(kind, 0.0) + value
            rows.append({
                "query": q.query_id, "record": record, "text": document.text,
                "same_wording": (query.prompt + query.completion) in document.text,
                "rank": rank_of(result.scores[q.index], col), "cosine_rank": rank_of(result.cosine[q.index], col),
                "score": float(result.scores[q.index, col]), "cosine": float(result.cosine[q.index, col]),
                "self_influence": float(result.self_influence[col]),
                "answer_tokens": float(tokens[answer].sum()) if answer else None,
                "subject_tokens": float(tokens[subject].sum()) if subject else None,
                "other_tokens": float(tokens.sum() - tokens[answer + subject].sum()),
                "answer_logp": float(logp[[t - 1 for t in answer]].sum()) if answer else None,
                "document_nll_per_token": float(-logp.mean()),
                "per_module": per_module,
            })
    return rows


def log_prob_gradients(model: torch.nn.Module, layers: list, ids: list[int], first_target: int) -> list[torch.Tensor]:
    """∇ Σ_{t ≥ first_target} log p(ids[t] | ids[<t]) w.r.t. each tracked layer's W̄, by plain autograd."""
    weights = [getattr(layer.module, layer.weight) for layer in layers]
    for weight in weights:
        weight.requires_grad_(True)
    x = torch.tensor([ids])
    logits = model(input_ids=x).logits[0, first_target - 1:-1]
    log_p = -torch.nn.functional.cross_entropy(logits, x[0, first_target:], reduction="sum")
    grads = torch.autograd.grad(log_p, weights)
    return [layer.wbar_of({layer.weight: g.detach()}) for layer, g in zip(layers, grads, strict=True)]


def query_log_prob(model: torch.nn.Module, prompt: list[int], completion: list[int]) -> float:
    """log p(completion | prompt)."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + completion])).logits[0, len(prompt) - 1:-1]
        return float(-torch.nn.functional.cross_entropy(logits, torch.tensor(completion), reduction="sum"))


def autograd_scores(opened, result, sequences: list) -> dict[str, torch.Tensor]:
    """Influence of every sequence in ``sequences`` on every query recomputed from autograd gradients: EK-FAC's
    (G + λI)⁻¹ at each damping factor (× the layer's mean Λ) and the plain dot product. [Q, len(sequences)]
    float64 each."""
    model, layers = opened.loaded.model, opened.layers
    curvature = {layer.name: opened.curvature.layers[layer.name] for layer in layers}
    per_query = [log_prob_gradients(model, layers, q.prompt_ids + q.completion_ids, len(q.prompt_ids))
                 for q in result.queries]
    stacked = [torch.stack([g[i] for g in per_query]) for i in range(len(layers))]  # [Q, out, in] per layer
    preconditioned = {"dot product": stacked}
    for factor in DAMPING_FACTORS:
        preconditioned[f"EK-FAC λ = {factor:g} × mean Λ"] = [
            curvature[layer.name].solve(g, damping=factor * float(curvature[layer.name].eigenvalues.mean()))
            for layer, g in zip(layers, stacked, strict=True)]
    scores = {name: torch.zeros(len(result.queries), len(sequences), dtype=torch.float64) for name in preconditioned}
    for n, sequence in enumerate(sequences):
        grads = log_prob_gradients(model, layers, list(sequence.input_ids), 1)
        for name, matrices in preconditioned.items():
            scores[name][:, n] = sum((m * g).sum((-2, -1)).double() for m, g in zip(matrices, grads, strict=True))
    return scores


def finite_difference(opened, query, ids: list[int], relative_steps: tuple[float, ...] = (1e-3, 1e-2)) -> list[float]:
    """d/dε log p(completion | prompt) along θ + ε (G + λI)⁻¹ ∇log p(z) (EK-FAC's default damping), by 4-point
    central differences with ‖Δθ‖ = each relative step × ‖θ‖ of the tracked weights; the model must be float64."""
    layers = opened.layers
    curvature = {layer.name: opened.curvature.layers[layer.name] for layer in layers}
    weights = [getattr(layer.module, layer.weight) for layer in layers]
    grads = log_prob_gradients(opened.loaded.model, layers, ids, 1)
    direction = [curvature[layer.name].solve(g).reshape(w.shape) for layer, g, w in zip(layers, grads, weights,
                                                                                        strict=True)]
    size = float(torch.cat([d.reshape(-1) for d in direction]).norm())
    scale = float(torch.cat([w.detach().reshape(-1) for w in weights]).norm())
    prompt, completion = list(query.prompt_ids), list(query.completion_ids)

    def at(t: float) -> float:
        with torch.no_grad():
            for w, d in zip(weights, direction, strict=True):
                w.add_(t * d)
        value = query_log_prob(opened.loaded.model, prompt, completion)
        with torch.no_grad():
            for w, d in zip(weights, direction, strict=True):
                w.sub_(t * d)
        return value

    slopes = []
    for relative in relative_steps:
        eps = relative * scale / size
        f = [at(k * eps) for k in (2, 1, -1, -2)]
        slopes.append((-f[0] + 8 * f[1] - 8 * f[2] + f[3]) / (12 * eps))
    return slopes


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation (no ties expected)."""
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def recall_of(scores: torch.Tensor, result, truths: list, name: str) -> dict:
    """Recall@1/5/10 and MRR of one [Q, N] score matrix."""
    from wherefrom.analysis.retrieval import Ranking, evaluate, record_order

    record_ids = [s.record_id for s in result.sequences]
    ranking = Ranking(name, {q.query_id: record_order(scores[q.index], record_ids) for q in result.queries})
    evaluation = evaluate(ranking, truths, (1, 5, 10))
    return {"recall": {str(k): round(v, 3) for k, v in evaluation.recall.items()}, "mrr": round(evaluation.mrr, 3)}


def token_views(result) -> dict[str, torch.Tensor]:
    """Rankings built from the per-token influence of every sequence: its largest token, and the sum of its
    positive tokens. [Q, N] each."""
    offsets = result.token_offsets.tolist()
    views = {"largest token": torch.zeros(result.scores.shape, dtype=torch.float64),
             "positive tokens": torch.zeros(result.scores.shape, dtype=torch.float64)}
    for n in range(len(result.sequences)):
        tokens = result.per_token[:, offsets[n]:offsets[n + 1]].double()
        views["largest token"][:, n] = tokens.max(1).values
        views["positive tokens"][:, n] = tokens.clamp(min=0).sum(1)
    return views


def bootstrap_interval(values: list[float], resamples: int = 2000) -> list[float]:
    """The 95% percentile bootstrap interval of the mean over queries (seeded)."""
    rng = np.random.default_rng(0)
    means = rng.choice(np.asarray(values, dtype=float), (resamples, len(values))).mean(1)
    return [round(float(x), 2) for x in np.percentile(means, [2.5, 97.5])]


def mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def summarise(rows: list[dict]) -> dict:
    """The hypotheses, each as numbers over all carriers."""
    negative = [r for r in rows if r["score"] < 0]
    with_answer = [r for r in rows if r["answer_tokens"] is not None]
    modules = sorted({k for r in rows for k in r["per_module"]})
    same = [r for r in rows if r["same_wording"]]
    other = [r for r in rows if not r["same_wording"]]
    return {
        "carriers": len(rows),
        "negative_score": len(negative),
        "rank_median": float(np.median([r["rank"] for r in rows])),
        "in_top_10": sum(r["rank"] <= 10 for r in rows),
        "cosine_in_top_10": sum(r["cosine_rank"] <= 10 for r in rows),
        "wording": {
            "same_as_query": {"carriers": len(same), "in_top_10": sum(r["rank"] <= 10 for r in same),
                              "median_rank": float(np.median([r["rank"] for r in same])),
                              "negative": sum(r["score"] < 0 for r in same)},
            "other": {"carriers": len(other), "in_top_10": sum(r["rank"] <= 10 for r in other),
                      "median_rank": float(np.median([r["rank"] for r in other])),
                      "negative": sum(r["score"] < 0 for r in other)},
        },
        "tokens": {
            "answer_positive": sum(r["answer_tokens"] > 0 for r in with_answer),
            "answer_found": len(with_answer),
            "negative_with_positive_answer": sum(r["answer_tokens"] is not None and r["answer_tokens"] > 0
                                                 for r in negative),
            "mean_answer": mean([r["answer_tokens"] for r in with_answer]),
            "mean_subject": mean([r["subject_tokens"] for r in rows if r["subject_tokens"] is not None]),
            "mean_other": mean([r["other_tokens"] for r in rows]),
            "negative_mean_answer": mean([r["answer_tokens"] for r in negative if r["answer_tokens"] is not None]),
            "negative_mean_subject": mean([r["subject_tokens"] for r in negative if r["subject_tokens"] is not None]),
            "negative_mean_other": mean([r["other_tokens"] for r in negative]),
        },
        "fit": {
            "spearman_rank_vs_answer_logp": spearman([r["rank"] for r in with_answer],
                                                     [r["answer_logp"] for r in with_answer]),
            "spearman_rank_vs_self_influence": spearman([r["rank"] for r in rows], [r["self_influence"] for r in rows]),
            "spearman_score_vs_answer_logp": spearman([r["score"] for r in with_answer],
                                                      [r["answer_logp"] for r in with_answer]),
            "median_answer_logp": float(np.median([r["answer_logp"] for r in with_answer])),
            "negative_median_answer_logp": float(np.median([r["answer_logp"] for r in negative
                                                            if r["answer_logp"] is not None])) if negative else None,
        },
        "per_module": {m: {"mean": mean([r["per_module"][m] for r in rows]),
                           "negative_carriers_mean": mean([r["per_module"][m] for r in negative])} for m in modules},
    }


def analyse(out: Path, world: FactWorld, threads: int, carriers_only: bool = False) -> dict:
    """Stage 3 (see the module docstring). ``carriers_only``: recompute the scores by autograd (the damping sweep,
    the dot product, the agreement with `score`) for the 36 carriers' columns only, not all 238, so those
    variants get no recall, only their carriers' signs (a backward pass per sequence is the cost)."""
    from wherefrom.analysis.fact_tracing import read_truth
    from wherefrom.curvature.opening import open_run
    from wherefrom.scoring.results import ScoreResult

    torch.set_num_threads(threads)
    result = ScoreResult.load(out / "scores-ekfac")
    truths = read_truth(out / "truth.jsonl")
    opened = open_run(out / "run")
    model, tokenizer = opened.loaded.model.eval(), opened.loaded.tokenizer
    rows = carrier_rows(world, result, model, tokenizer)
    sequences = opened.sequences(None, opened.data["max_length"], opened.data["pack"])
    if [s.record_id for s in sequences] != [s.record_id for s in result.sequences]:
        raise RuntimeError("the run's sequences are not the score folder's columns")
    start = time.perf_counter()
    carrier_columns = sorted({s.row for q in result.queries for s in result.sequences
                              if s.record_id in world.carriers(world.queries[q.index])})
    columns = carrier_columns if carriers_only else list(range(len(sequences)))
    brute = autograd_scores(opened, result, [sequences[c] for c in columns])
    default = brute["EK-FAC λ = 0.1 × mean Λ"]
    product = result.scores.double()[:, columns]
    agreement = {"max_abs_difference": float((default - product).abs().max()),
                 "max_abs_score": float(product.abs().max()),
                 "pearson": float(np.corrcoef(default.flatten(), product.flatten())[0, 1]),
                 "columns": "the 36 carriers" if carriers_only else "all",
                 "seconds": round(time.perf_counter() - start, 1)}
    position = {c: i for i, c in enumerate(columns)}

    def variant(name: str, scores: torch.Tensor, full: bool) -> dict:
        at = (lambda c: c) if full else position.__getitem__
        negative = sum(float(scores[q.index, at(s.row)]) < 0 for q in result.queries for s in result.sequences
                       if s.record_id in world.carriers(world.queries[q.index]))
        return {**(recall_of(scores, result, truths, name) if full else {"recall": None, "mrr": None}),
                "carriers_negative": negative}

    variants = {**{name: variant(name, scores, not carriers_only) for name, scores in brute.items()},
                **{name: variant(name, scores, True) for name, scores in token_views(result).items()}}

    opened.loaded.model.double()
    worst_and_best = []
    for q in result.queries:
        mine = [r for r in rows if r["query"] == q.query_id]
        worst_and_best += [min(mine, key=lambda r: r["score"]), max(mine, key=lambda r: r["score"])]
    column = {s.record_id: s.row for s in result.sequences}
    checks = []
    for row in worst_and_best:
        query = next(q for q in result.queries if q.query_id == row["query"])
        slopes = finite_difference(opened, query, list(sequences[column[row["record"]]].input_ids))
        checks.append({"query": row["query"], "record": row["record"], "influence": row["score"],
                       "finite_difference": slopes})
    signs = sum(np.sign(c["influence"]) == np.sign(c["finite_difference"][0]) for c in checks)
    fd = {"pairs": checks, "sign_agreements": int(signs),
          "pearson": float(np.corrcoef([c["influence"] for c in checks],
                                       [c["finite_difference"][0] for c in checks])[0, 1])}
    return {"summary": summarise(rows), "autograd_agreement": agreement, "variants": variants,
            "finite_difference": fd, "carriers": rows}


def markdown(report: dict) -> str:
    """The results file's table and findings."""
    s, tune = report["analysis"]["summary"], report["pipeline"]["fine_tune"]
    lines = [
        "# Why a fact's own carrier can rank last: SmolLM2-135M + LoRA on 12 invented facts",
        "",
        f"Produced by `{report['command']}` (commit {report['commit']}, {report['date']}; load average "
        f"{report['load_average']} at the analysis's start, {report.get('load_average_end', '?')} at the end; "
        f"{report.get('wall_seconds', float('nan')) / 60:.1f} min wall for this invocation, cached stages skipped). "
        "Set-up: benchmarks/fact_world.py (238 documents, 12 facts × 3 wordings, "
        "12 distractors, 190 fillers); LoRA r 16 on q/k/v/o/gate/up/down.",
        "",
        f"Fine-tune: {tune['options']['epochs']} epochs, {tune['seconds']:.0f} s; greedy completion accuracy "
        f"{sum(tune['correct_before'])}/12 before, {sum(tune['correct_after'])}/12 after.",
        "",
        "## Recall of the carriers (wherefrom evaluate)",
        "",
        "| method | recall@1 | recall@5 | recall@10 (95% bootstrap over the 12 queries) | MRR |",
        "| --- | --- | --- | --- | --- |",
    ]
    for method in report["evaluation"]["methods"]:
        r, (lo, hi) = method["recall"], method["recall_10_interval"]
        lines.append(f"| {method['method']} | {r['1']:.2f} | {r['5']:.2f} | {r['10']:.2f} ({lo:.2f}-{hi:.2f}) | "
                     f"{method['mrr']:.2f} |")
    lines += ["", "## Other rankings of the same model", "",
              "Autograd gradients preconditioned with the fitted EK-FAC at five dampings (× each layer's mean Λ; "
              "0.1 is `score`'s default) and not at all (the dot product); and two views of `score --per-token`: each "
              "sequence's largest token, and the sum of its positive tokens.", "",
              "| variant | recall@10 | MRR | carriers with negative influence (of 36) |", "| --- | --- | --- | --- |"]
    for name, v in report["analysis"]["variants"].items():
        recall = "not computed" if v["recall"] is None else f"{v['recall']['10']:.2f}"
        mrr = "not computed" if v["mrr"] is None else f"{v['mrr']:.2f}"
        lines.append(f"| {name} | {recall} | {mrr} | {v['carriers_negative']} |")
    agreement = report["analysis"]["autograd_agreement"]
    fd = report["analysis"]["finite_difference"]
    lines += ["", f"Autograd at the default damping against `wherefrom score` ({agreement['columns']} columns): "
              f"max |difference| "
              f"{agreement['max_abs_difference']:.3g} (largest |score| {agreement['max_abs_score']:.3g}), Pearson "
              f"{agreement['pearson']:.6f}.", "",
              f"Finite differences (each query's worst and best carrier, 24 pairs): sign agrees in "
              f"{fd['sign_agreements']}/24, Pearson {fd['pearson']:.4f}.", "",
              "## The carriers", "",
              f"{s['negative_score']} of {s['carriers']} carriers have negative influence; median rank "
              f"{s['rank_median']:.0f} of 238; {s['in_top_10']} in their query's top 10 by influence, "
              f"{s['cosine_in_top_10']} by cosine.", ""]
    t, w, f = s["tokens"], s["wording"], s["fit"]
    lines += [
        "| split of a carrier's influence | all carriers (mean) | carriers with negative influence (mean) |",
        "| --- | --- | --- |",
        f"| the answer's tokens | {t['mean_answer']:.4g} | {t['negative_mean_answer']:.4g} |",
        f"| the subject's tokens | {t['mean_subject']:.4g} | {t['negative_mean_subject']:.4g} |",
        f"| every other token | {t['mean_other']:.4g} | {t['negative_mean_other']:.4g} |",
        "",
        f"The answer's tokens push the right way in {t['answer_positive']} of {t['answer_found']} carriers, and in "
        f"{t['negative_with_positive_answer']} of the {s['negative_score']} carriers whose total is negative.",
        "",
        f"Wording: the carrier with the query's wording is in the top 10 for {w['same_as_query']['in_top_10']} of "
        f"{w['same_as_query']['carriers']} queries (median rank {w['same_as_query']['median_rank']:.0f}, "
        f"{w['same_as_query']['negative']} negative); the other wordings {w['other']['in_top_10']} of "
        f"{w['other']['carriers']} (median rank {w['other']['median_rank']:.0f}, {w['other']['negative']} negative).",
        "",
        f"Fit: median log p of a carrier's answer tokens {f['median_answer_logp']:.3f} nats "
        f"({f['negative_median_answer_logp']} for the negative ones); Spearman of influence with it "
        f"{f['spearman_score_vs_answer_logp']:.2f}; of rank with self-influence "
        f"{f['spearman_rank_vs_self_influence']:.2f}.",
        "",
        "| module | mean over carriers | mean over negative carriers |", "| --- | --- | --- |",
    ]
    for module, v in s["per_module"].items():
        lines.append(f"| {module} | {v['mean']:.4g} | {v['negative_carriers_mean']:.4g} |")
    lines += ["", "Every carrier's rank, split and fit are in fact-tracing-smollm2.json (`analysis.carriers`).", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench-work" / "fact-tracing")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=FineTuneOptions.epochs)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--index", action="store_true", help="also build the gradient index and score with it alone")
    parser.add_argument("--refine", action="store_true", help="also score with --refine cg (32 sequences, 5 steps)")
    parser.add_argument("--all-linear", action="store_true", help="also fit and score with --modules all-linear")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the .json and .md go")
    parser.add_argument("--carriers-only", action="store_true",
                        help="recompute the scores by autograd (damping sweep, dot product) for the 36 carriers only "
                             "(no recall for those variants; a backward pass per sequence is saved)")
    args = parser.parse_args()
    started = time.perf_counter()
    os.environ["WHEREFROM_THREADS"] = str(args.threads)
    world = build_world(args.seed)
    options = FineTuneOptions(epochs=args.epochs, seed=args.seed, threads=args.threads)
    pipeline_report = pipeline(args.out, world, options, args.index, args.refine, args.all_linear)
    evaluation = json.loads((args.out / "evaluation.json").read_text())
    report = {
        "command": "PYTHONPATH=src python benchmarks/fact_tracing_smollm2.py " + " ".join(sys.argv[1:]),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                 cwd=REPO).stdout.strip(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "pipeline": pipeline_report,
        "evaluation": {"methods": [{"method": m["method"], "recall": m["recall"], "mrr": m["mrr"],
                                    "recall_10_interval": bootstrap_interval([q["recall"]["10"] for q in m["queries"]])}
                                   for m in evaluation["methods"]]},
        "analysis": analyse(args.out, world, args.threads, args.carriers_only),
    }
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    report["load_average_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    args.results.mkdir(exist_ok=True)
    (args.results / "fact-tracing-smollm2.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.results / "fact-tracing-smollm2.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
