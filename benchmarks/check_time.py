"""`wherefrom check` on the workload of issue 19: does it reach a verdict within its default budget?

SmolLM2-135M cut to 6 decoder blocks (18 MLP linears), 32 passages of 48 tokens (benchmarks/workload.py
``reduced_workload``; run benchmarks/prepare.py first). Fits a run once (its seconds kept in fit-seconds.txt),
then runs `check` through the CLI with its defaults (budget: the fit's recorded time) and with twice that budget,
and records each run's per-layer verdicts, energy cosines and times, with the load average, in a JSON file.

``--curves`` instead records, for one checked layer and one query, CG's residual ‖b - A x_k‖/‖b‖ and energy
bᵀx_k after each iteration, and the extreme Ritz values of M A (Lanczos from the CG coefficients), in two
pairings: the run's EK-FAC against G on the check's 8-sequence sample (the check before issue 19), and EK-FAC
fitted on that same sample (the check now). Nothing here asserts on time.

    PYTHONPATH=src python benchmarks/check_time.py [--work DIR] [--out FILE] [--curves] [-- CHECK ARGS...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.workload import REPO_ROOT, WORK, reduced_workload  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results"


def timed(command: list[str]) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system of the command) and stdout."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return seconds, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, done.stdout


def load() -> str:
    """The 1-, 5- and 15-minute load averages."""
    return " ".join(open("/proc/loadavg").read().split()[:3])


def parse(output: str) -> dict:
    """Per-layer rows (name, energy cosine, cosine, relative error, solver error, verdict) and the verdict line."""
    rows = []
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if len(cells) == 6 and re.fullmatch(r"-?\d+\.\d+", cells[1]):
            rows.append(dict(zip(("layer", "energy_cosine", "cosine", "relative_error", "solver_error", "verdict"),
                                 cells, strict=True)))
    verdict = next((line for line in output.splitlines() if line.startswith("verdict:")), "")
    title = next((line.strip() for line in output.splitlines() if "EK-FAC against" in line), "")
    stopped = next((line.strip() for line in output.splitlines() if line.startswith("CG ")), "")
    return {"layers": rows, "verdict": verdict, "title": title, "stopped": stopped}


def fit(work: Path) -> tuple[Path, Path, float, float]:
    """The run (fitted once, timed) and the corpus."""
    workload = reduced_workload(32, 6, work)
    run, fit_file = workload.runs_dir / "check-run", workload.runs_dir / "fit-seconds.txt"
    if not fit_file.exists():
        wall, cpu, _ = timed([sys.executable, "-m", "wherefrom", "fit", "--model", str(workload.model_dir), "--corpus",
                              str(workload.corpus_jsonl), "--out", str(run), "--max-length", "48", "--restart", "-q"])
        fit_file.write_text(f"{wall} {cpu}\n")
    fit_wall, fit_cpu = map(float, fit_file.read_text().split())
    return run, workload.corpus_jsonl, fit_wall, fit_cpu


def budgets(work: Path, out: Path, extra: list[str]) -> None:
    """The default check and the check with twice the budget, one after the other."""
    run, corpus, fit_wall, fit_cpu = fit(work)
    recorded = json.loads((run / "manifest.json").read_text())["fit_seconds"]
    results = {"command": "PYTHONPATH=src python benchmarks/check_time.py " + " ".join(extra),
               "fit": {"wall_s": fit_wall, "cpu_s": fit_cpu, "recorded_fit_seconds": recorded}, "checks": []}
    for label, args in (("default budget", []), ("2 x budget", ["--budget", f"{2 * recorded:g}"])):
        before = load()
        wall, cpu, output = timed([sys.executable, "-m", "wherefrom", "check", "--run", str(run), "--corpus",
                                   str(corpus), *args, *extra])
        results["checks"].append({"label": label, "args": args, "wall_s": wall, "cpu_s": cpu, "load_before": before,
                                  "load_after": load(), **parse(output)})
        print(f"--- {label}: {wall:.1f} s wall, {cpu:.1f} s CPU (fit {fit_wall:.1f} s wall, recorded {recorded:.1f} s)")
        print("\n".join(output.strip().splitlines()[-14:]))
    out.write_text(json.dumps(results, indent=1) + "\n")
    out.with_suffix(".md").write_text(budget_markdown(results))


def budget_markdown(results: dict) -> str:
    """The checks' per-layer verdicts as a Markdown table."""
    fit = results["fit"]
    lines = [f"`{results['command']}`", "",
             f"fit: {fit['wall_s']:.1f} s wall, {fit['cpu_s']:.1f} s CPU (recorded fit_seconds "
             f"{fit['recorded_fit_seconds']:.1f} s: the default budget)", "",
             "| check | wall s | CPU s | load (1/5/15 min) before | layer | energy cosine | cosine | solver error | "
             "verdict |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for check in results["checks"]:
        for row in check["layers"]:
            lines.append(f"| {check['label']} | {check['wall_s']:.1f} | {check['cpu_s']:.1f} | {check['load_before']} | "
                         f"{row['layer']} | {row['energy_cosine']} | {row['cosine']} | {row['solver_error']} | "
                         f"{row['verdict']} |")
    lines += ["", *(f"- {c['label']}: {c['title']}; {c['stopped']}; {c['verdict']}" for c in results["checks"])]
    return "\n".join(lines) + "\n"


def curves(work: Path, out: Path, iterations: int) -> None:
    """Residual and energy curves of PCG, old pairing against new, on the first checked layer and one query."""
    import torch

    from wherefrom.curvature.opening import open_run
    from wherefrom.solvers.ggn import GaussNewton
    from wherefrom.solvers.iterative import conjugate_gradient, damped
    from wherefrom.solvers.layout import Layout
    from wherefrom.solvers.preconditioned import curvature_inverse, layer_dampings
    from wherefrom.solvers.reference import fit_options_of, like_with_like
    from wherefrom.solvers.sample import as_queries, flat_gradients, sample_sequences

    torch.set_num_threads(int(os.environ.get("WHEREFROM_THREADS", "2")))
    run, corpus, _, _ = fit(work)
    opened = open_run(run)
    model, layers = opened.loaded.model, opened.layers[:1]
    sequences = opened.sequences(corpus, 48, False)
    layout = Layout.of(layers)
    b = flat_gradients(model, layers, as_queries(sample_sequences(sequences, 2, seed=2))[:1], 8, quiet=True)
    dampings = layer_dampings(opened.curvature.layers, layout, None)
    refit_start = time.perf_counter()
    reference = like_with_like(model, layers, opened.curvature, fit_options_of(opened.fitted, 8), sequences, 8, None,
                               True, quiet=True)
    refit_seconds = time.perf_counter() - refit_start
    G = GaussNewton(model, layers, [s.input_ids for s in reference.sequences], 8, block_diagonal=True)
    A = damped(G, layout.expand(dampings, b.dtype))
    results = {"command": f"PYTHONPATH=src python benchmarks/check_time.py --curves --iterations {iterations}",
               "layer": layers[0].name, "damping": dampings[layers[0].name], "refit_seconds": refit_seconds,
               "load": load(), "pairings": {}}
    for name, curvature in (("run's EK-FAC (32 sequences), G on 8", opened.curvature),
                            ("EK-FAC fitted on the same 8 sequences", reference.curvature)):
        M = curvature_inverse(curvature.layers, layout, dampings)
        coefficients: list[tuple[float, float]] = []
        solution = conjugate_gradient(A, b, iterations, preconditioner=_recording(M, coefficients), quiet=True)
        energies = solution.energies[:, 0, 0].double()
        results["pairings"][name] = {
            "residual": solution.residuals[:, 0].tolist(), "energy": energies.tolist(),
            "energy_cosine_bound": (energies[1] / energies[1:]).sqrt().tolist(),
            "ritz": _ritz(solution, coefficients)}
        print(name, json.dumps(results["pairings"][name]))
    out.write_text(json.dumps(results, indent=1) + "\n")
    out.with_suffix(".md").write_text(curves_markdown(results))


def curves_markdown(results: dict) -> str:
    """Per iteration and pairing: residual, energy-cosine bound, Ritz range of M A, as a Markdown table."""
    names = list(results["pairings"])
    header = " | ".join(f"{n}: residual / cos_A bound / Ritz range" for n in names)
    lines = [f"`{results['command']}` (layer {results['layer']}, λ = {results['damping']:.3g}, refit "
             f"{results['refit_seconds']:.1f} s, load {results['load']})", "", f"| k | {header} |",
             "| --- |" + " --- |" * len(names)]
    for k in range(1, len(results["pairings"][names[0]]["residual"])):
        cells = []
        for n in names:
            p = results["pairings"][n]
            low, high = p["ritz"][k - 1]
            cells.append(f"{p['residual'][k]:.3g} / {p['energy_cosine_bound'][k - 1]:.3f} / [{low:.3g}, {high:.3g}]")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _recording(M, record: list):
    """M, noting each call's rᵀz (the PCG coefficients follow from consecutive rᵀz and the energies)."""
    def apply(r):
        z = M(r)
        record.append(float((r.double() * z.double()).sum()))
        return z
    return apply


def _ritz(solution, rz: list[float]) -> list[tuple[float, float]]:
    """Extreme eigenvalues of the Lanczos matrix T_k of M A after each iteration k (from α_k, β_k of PCG):
    α_k = (E_{k+1} - E_k) / rᵀz_k (energy gain per step), β_k = rᵀz_{k+1} / rᵀz_k."""
    import torch

    energies = solution.energies[:, 0, 0].double()
    alphas = [(float(energies[k + 1] - energies[k]) / rz[k]) for k in range(len(energies) - 1)]
    betas = [rz[k + 1] / rz[k] for k in range(len(alphas))]
    out = []
    for n in range(1, len(alphas) + 1):
        T = torch.zeros(n, n, dtype=torch.float64)
        for j in range(n):
            T[j, j] = 1 / alphas[j] + (betas[j - 1] / alphas[j - 1] if j else 0.0)
            if j + 1 < n:
                T[j, j + 1] = T[j + 1, j] = betas[j] ** 0.5 / alphas[j]
        values = torch.linalg.eigvalsh(T)
        out.append((float(values.min()), float(values.max())))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--out", type=Path, help="JSON results (default benchmarks/results/check-budget.json, or "
                                                 "check-curves.json with --curves)")
    parser.add_argument("--curves", action="store_true", help="PCG's residual and energy curves, old and new pairing")
    parser.add_argument("--iterations", type=int, default=12, help="with --curves: CG iterations")
    parser.add_argument("check_args", nargs="*", help="extra arguments of `wherefrom check` (after --)")
    args = parser.parse_args()
    if args.curves:
        curves(args.work, args.out or RESULTS / "check-curves.json", args.iterations)
    else:
        budgets(args.work, args.out or RESULTS / "check-budget.json", args.check_args)


if __name__ == "__main__":
    main()
