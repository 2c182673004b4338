"""gpu.json and gpu.md from a GPU benchmark run (benchmarks/gpu/driver.py): tables, the issue's goals, notes."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timezone

GOALS = (  # (key, what, target as text, comparison)
    ("e2e_vs_kronfluence", "wherefrom fit + score time ÷ Kronfluence's (bf16)", "≤ 0.5", lambda v: v <= 0.5),
    ("e2e_vs_bergson", "wherefrom fit + score time ÷ Bergson's (bf16)", "≤ 0.65", lambda v: v <= 0.65),
    ("memory_vs_kronfluence", "wherefrom peak GPU memory ÷ Kronfluence's (bf16)", "≤ 0.6", lambda v: v <= 0.6),
    ("memory_vs_bergson", "wherefrom peak GPU memory ÷ Bergson's (bf16)", "≤ 0.6", lambda v: v <= 0.6),
    ("fit_throughput_vs_floor", "wherefrom fit tokens/s ÷ the floor's forward+backward tokens/s (bf16)", "≥ 0.4",
     lambda v: v >= 0.4),
    ("pearson_kronfluence_fp32", "lowest per-query Pearson, wherefrom vs Kronfluence, float32", "≥ 0.99",
     lambda v: v >= 0.99),
    ("pearson_bergson_fp32", "lowest per-query Pearson, wherefrom vs Bergson, float32", "≥ 0.99", lambda v: v >= 0.99),
    ("pearson_bf16_vs_fp32", "lowest per-query Pearson, wherefrom bf16 vs wherefrom float32", "≥ 0.98",
     lambda v: v >= 0.98),
)  # fmt: skip


def payload(run, main_cmp: dict | None, reduced_cmp: dict | None) -> dict:
    """Everything the run measured, as plain data (gpu.json)."""
    data = {
        "meta": run.meta,
        "steps": [asdict(step) for step in run.steps],
        "tests": run.tests,
        "main": {"results": {k: asdict(r) for k, r in run.main.items()}, "comparison": main_cmp},
        "index": run.index,
        "reduced": {"results": {k: asdict(r) for k, r in run.reduced.items()}, "comparison": reduced_cmp},
    }
    data["goals"] = goals(data)
    return data


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator is not None and denominator else None


def _min_pearson(comparison: dict | None, tool: str) -> float | None:
    vs = (comparison or {}).get("vs_reference", {}).get(tool)
    return min(vs["pearson"]) if vs and (comparison or {}).get("reference") == "wherefrom" else None


def goals(data: dict) -> list[dict]:
    """The issue's goals with the measured value of each (None where its tools did not finish)."""
    main = data["main"]["results"]
    wherefrom, floor = main.get("wherefrom"), main.get("floor")
    total = {tool: r["total_s"] for tool, r in main.items()}
    memory = {tool: r["peak_gpu_gb"] for tool, r in main.items()}
    tokens = data["meta"]["tokens"]
    measured = {
        "e2e_vs_kronfluence": _ratio(total.get("wherefrom"), total.get("kronfluence")),
        "e2e_vs_bergson": _ratio(total.get("wherefrom"), total.get("bergson")),
        "memory_vs_kronfluence": _ratio(memory.get("wherefrom"), memory.get("kronfluence")),
        "memory_vs_bergson": _ratio(memory.get("wherefrom"), memory.get("bergson")),
        "fit_throughput_vs_floor": _ratio(tokens / wherefrom["fit_s"], floor["extra"]["pass_tokens_per_s"])
        if wherefrom and floor else None,
        "pearson_kronfluence_fp32": _min_pearson(data["reduced"]["comparison"], "kronfluence"),
        "pearson_bergson_fp32": _min_pearson(data["reduced"]["comparison"], "bergson"),
        "pearson_bf16_vs_fp32": _min_pearson(data["reduced"]["comparison"], "wherefrom bf16"),
    }  # fmt: skip
    return [
        {"goal": key, "what": what, "target": target, "measured": measured[key],
         "met": None if measured[key] is None else bool(check(measured[key]))}
        for key, what, target, check in GOALS
    ]  # fmt: skip


def _cell(value, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def tool_table(section: dict, tokens: int) -> list[str]:
    """One row per tool: stage times, fit throughput, peak GPU memory, ratios and Pearson vs wherefrom."""
    results, comparison = section["results"], section["comparison"] or {}
    reference = comparison.get("reference")
    base = results.get(reference) if reference else None
    header = ["tool", "fit s", "score s", "fit + score s", "fit tokens/s", "peak GPU GB", "peak RSS GB",
              f"× {reference or 'reference'} time", f"Pearson vs {reference or '—'} (mean / min)", "scale"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for tool, result in results.items():
        vs = comparison.get("vs_reference", {}).get(tool)
        pearson = f"{sum(vs['pearson']) / len(vs['pearson']):.4f} / {min(vs['pearson']):.4f}" if vs else "—"
        if tool == reference:
            pearson = "reference"
        cells = [
            tool, _cell(result["fit_s"]), _cell(result["score_s"]), _cell(result["total_s"]),
            f"{tokens / result['fit_s']:,.0f}" if result["fit_s"] else "—", _cell(result["peak_gpu_gb"], 2),
            _cell(result["peak_gb"], 2), _cell(_ratio(result["total_s"], base["total_s"] if base else None), 2),
            pearson, _cell(vs["scale"], 3) if vs else "—",
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(data: dict) -> str:
    meta, machine, size = data["meta"], data["meta"]["machine"], data["meta"]["size"]
    when = datetime.fromtimestamp(meta["started_at"], timezone.utc).isoformat(timespec="seconds")
    gpu = f"{machine.get('gpu', 'no GPU')} ({machine.get('gpu_memory_gb', '—')} GB, driver {machine.get('driver', '—')})"
    lines = [
        "# GPU benchmark: wherefrom, Kronfluence and Bergson side by side",
        "",
        f"Commit `{meta['commit']}`, started {when}, `{meta['command']}`; finished after {meta.get('elapsed_s', 0):.0f} s "
        f"of a {meta['deadline_s']:.0f} s deadline.",
        "",
        f"Machine: {gpu}, torch {machine['torch']}, {machine['cpus']} CPUs, device `{machine['device']}`; "
        + ", ".join(f"{name} {version}" for name, version in machine["packages"].items()) + ".",
        "",
        f"Workload (`--size {meta['size_name']}`): Llama architecture built from a config with random weights, "
        f"{meta['parameters'] / 1e9:.2f} B parameters (hidden {size['hidden']}, MLP {size['intermediate']}, "
        f"{size['layers']} blocks, vocabulary {size['vocab']}); every MLP projection tracked "
        f"({3 * size['layers']} layers); {size['sequences']} sequences × {size['seq_len']} tokens = "
        f"{meta['tokens']:,} tokens, {size['queries']} queries, batch {size['batch_size']} sequences; EK-FAC, "
        "empirical Fisher, damping 0.1 × mean eigenvalue per layer.",
        "",
        "## Steps",
        "",
        "| step | status | wall s | budget s | note |",
        "| --- | --- | --- | --- | --- |",
        *[f"| {s['name']} | {s['status']} | {s['wall_s']:.1f} | {s['budget_s']:.0f} | {s['note']} |"
          for s in data["steps"]],
        "",
        f"`pytest -m cuda`: {data['tests'].get('summary', 'not run')}",
        "",
        "## bf16, whole model",
        "",
        *tool_table(data["main"], meta["tokens"]),
        "",
    ]  # fmt: skip
    floor = data["main"]["results"].get("floor")
    if floor:
        extra = floor["extra"]
        lines += [
            f"Floor: one bf16 forward + backward pass (gradients to the tracked layers' outputs only) over the corpus "
            f"took {extra['pass_s'][0]:.1f} s = {extra['pass_tokens_per_s']:,.0f} tokens/s; the {extra['n_eigh']} "
            f"float64 eigendecompositions of the factors' shapes {extra['eigh_s']:.1f} s"
            + (" (each distinct size timed once)" if extra.get("eigh_once_per_size") else "")
            + ". Its fit = 2 passes + eigendecompositions, score = 1 pass.",
            "",
        ]
    if data["index"]:
        index = data["index"]
        pearson = index.get("pearson_vs_full")
        lines += [
            "## Index (wherefrom, bf16)",
            "",
            f"`wherefrom index`: {_cell(index.get('build_s'))} s, peak GPU {_cell(index.get('build_peak_gpu_gb'), 2)} GB, "
            f"{index.get('index_bytes', 0) / 1e9:.2f} GB on disk; `score --index`: {_cell(index.get('score_s'))} s; "
            "Pearson with the full scores (mean / min over queries): "
            + (f"{sum(pearson) / len(pearson):.4f} / {min(pearson):.4f}" if pearson else "—"),
            "",
        ]
    lines += [
        f"## float32 on the reduced model (first {size['reduced_layers']} blocks, {size['reduced_sequences']} sequences)",
        "",
        *(tool_table(data["reduced"], size["reduced_sequences"] * size["seq_len"]) if data["reduced"]["results"]
          else ["not run"]),
        "",
        "`wherefrom bf16` is wherefrom with `--dtype bfloat16` on the same reduced model: its Pearson column is bf16 "
        "against float32.",
        "",
        "## Goals (issue 10)",
        "",
        "| goal | target | measured | met |",
        "| --- | --- | --- | --- |",
        *[f"| {g['what']} | {g['target']} | {_cell(g['measured'], 3)} | "
          f"{'—' if g['met'] is None else ('yes' if g['met'] else 'no')} |" for g in data["goals"]],
        "",
        "## How it was measured",
        "",
        "- Every stage is its own process (Python start and model load included in its wall time), run one after "
        "another on the one GPU. Peak GPU GB: the device's memory in use (NVML) minus what was in use before the "
        "stage, polled every 50 ms: it counts the CUDA context and the caching allocator's reserve.",
        "- wherefrom: `wherefrom fit/score --device ... --dtype bfloat16`. Kronfluence 1.0.1: the model in bf16 "
        "with `smart_low_precision_factor_arguments` / `smart_low_precision_score_arguments` (its own low-precision "
        "setting; float32 defaults in the float32 table). Bergson 2.5.1: `bergson ekfac --index_cfg.precision bf16` "
        "with fp32 Hessian accumulation (its default), fit = its own step-2 timer, score = the rest of its process.",
        "- fit tokens/s = corpus tokens ÷ fit wall time. Pearson per query against wherefrom's scores over the "
        "corpus; scale = least-squares slope of a tool's scores on wherefrom's.",
        "- Built and run by `benchmarks/gpu/run.sh` (see benchmarks/README.md, \"GPU benchmark\").",
        "",
    ]  # fmt: skip
    return "\n".join(lines)
