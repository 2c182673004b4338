"""Write an LDS report: ``lds.json`` (everything, per query included), ``lds.md`` (the tables) and ``lds.png``
(each method's mean LDS with its interval, and LDS against damping)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

from matplotlib.figure import Figure
from rich.table import Table

from wherefrom.faithfulness.lds import Estimate
from wherefrom.faithfulness.runner import LdsReport
from wherefrom.fileio import atomic_write, atomic_write_text


def write_report(report: LdsReport, out: Path) -> list[Path]:
    """Write the three files into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "lds.json", out / "lds.md", out / "lds.png"]
    atomic_write_text(paths[0], json.dumps(asdict(report), indent=2, allow_nan=True) + "\n")
    atomic_write_text(paths[1], markdown(report))
    figure = plot(report)
    atomic_write(paths[2], lambda p: figure.savefig(p, format="png", dpi=120, bbox_inches="tight"))
    return paths


def interval_text(e: Estimate | None) -> str:
    """``mean [low, high]`` with three decimals ("" for no estimate)."""
    if e is None:
        return ""
    return f"{e.mean:.3f} [{e.low:.3f}, {e.high:.3f}]" if math.isfinite(e.low) else f"{e.mean:.3f}"


def markdown(report: LdsReport) -> str:
    """The methods table, the damping table (if swept) and the noise ceiling (if several seeds), in markdown."""
    p = report.protocol
    confidence = f"{100 * p['confidence']:g}%"
    kinds = list(report.methods[0].by_kind) if report.methods else []
    lines = [f"LDS on {p['subject']}: {p['models']} models retrained on "
             f"{p['subset_size']} of {p['corpus_documents']} documents (fraction {p['fraction']}), "
             f"{p['seeds_per_subset']} seed(s) each, {len(p['queries'])} queries.", "",
             f"| method | damping | mean LDS [{confidence} CI] | minus identity, paired [{confidence} CI] | "
             + " | ".join(kinds) + " |", "| --- | --- | --- | --- | " + " | ".join("---" for _ in kinds) + " |"]
    lines += [f"| {r.method} | {r.damping} | {interval_text(r.estimate)} | {interval_text(r.versus_identity)} | " +
              " | ".join(f"{r.by_kind[k]:.3f}" for k in kinds) + " |" for r in report.methods]
    if report.sweep:
        lines += ["", f"EK-FAC against absolute damping λ (mean eigenvalue over layers: {p['mean_eigenvalue']:.4g}):",
                  "", f"| λ | λ / mean eigenvalue | mean LDS [{confidence} CI] | minus identity [{confidence} CI] |",
                  "| --- | --- | --- | --- |"]
        lines += [f"| {r.damping} | {factor:g} | {interval_text(r.estimate)} | {interval_text(r.versus_identity)} |"
                  for r, factor in zip(report.sweep, p["sweep_factors"], strict=True)]
    if report.seed_agreement is not None:
        lines += ["", "Seed agreement (Spearman of training seed 0's log p against seed 1's, mean over queries): "
                      f"{interval_text(report.seed_agreement)}."]
    return "\n".join(lines) + "\n"


def plot(report: LdsReport) -> Figure:
    """Mean LDS per method with its interval; and, when swept, EK-FAC's LDS against λ / mean eigenvalue."""
    figure = Figure(figsize=(10 if report.sweep else 5.5, 3.6))
    axes = figure.subplots(1, 2 if report.sweep else 1, squeeze=False)[0]
    names = [r.method for r in report.methods]
    means = [r.estimate.mean for r in report.methods]
    errors = [[r.estimate.mean - r.estimate.low for r in report.methods],
              [r.estimate.high - r.estimate.mean for r in report.methods]]
    axes[0].bar(names, means, yerr=errors, capsize=4, color="#4c72b0")
    axes[0].set_ylabel(f"mean LDS ({100 * report.protocol['confidence']:g}% CI)")
    p = report.protocol
    axes[0].set_title(f"{p['models']} subsets × {p['seeds_per_subset']} seed(s), fraction {p['fraction']}")
    axes[0].tick_params(axis="x", rotation=30)
    axes[0].axhline(0, color="black", linewidth=0.8)
    if report.sweep:
        factors = report.protocol["sweep_factors"]
        axes[1].errorbar(factors, [r.estimate.mean for r in report.sweep], capsize=4, marker="o",
                         yerr=[[r.estimate.mean - r.estimate.low for r in report.sweep],
                               [r.estimate.high - r.estimate.mean for r in report.sweep]])
        default = next((r for r in report.methods if r.method == "ekfac"), None)
        if default is not None:
            axes[1].axhline(default.estimate.mean, color="grey", linestyle="--", label="default (0.1 × per layer)")
            axes[1].legend()
        axes[1].set_xscale("log")
        axes[1].set_xlabel("λ / mean eigenvalue (absolute λ, same for every layer)")
        axes[1].set_ylabel("EK-FAC mean LDS")
        axes[1].set_title("LDS against damping")
    figure.tight_layout()
    return figure


def terminal_table(report: LdsReport) -> Table:
    """The methods (and damping sweep) as a rich table for the terminal."""
    p = report.protocol
    table = Table(title=f"LDS on {p['subject']}: {p['models']} models × {p['seeds_per_subset']} seed(s), fraction "
                        f"{p['fraction']}, {len(p['queries'])} queries")
    table.add_column("method")
    table.add_column("damping")
    table.add_column(f"mean LDS [{100 * p['confidence']:g}% CI]", justify="right")
    table.add_column("minus identity (paired)", justify="right")
    for row in report.methods:
        table.add_row(row.method, row.damping, interval_text(row.estimate), interval_text(row.versus_identity))
    for row in report.sweep:
        table.add_row(f"[dim]{row.method}[/]", row.damping, interval_text(row.estimate),
                      interval_text(row.versus_identity))
    return table
