"""Print a dry run's cost estimate as a table: memory and time per stage, then the disk its outputs will take."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from wherefrom.costs.estimate import CostEstimate


def human_bytes(n: int) -> str:
    """1536 → '1.5 KiB'."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_seconds(seconds: float) -> str:
    """0.004 → '<0.1 s', 75 → '1 min 15 s', 7380 → '2 h 03 min'."""
    if seconds < 0.1:
        return "<0.1 s" if seconds > 0 else "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def print_costs(estimate: CostEstimate, console: Console | None = None) -> None:
    """The estimate as a table on ``console`` (stdout by default)."""
    console = console or Console()
    if estimate.execution:
        run = estimate.execution
        factors = {"host": ", factor sums in host memory", "device": ", factor sums on the device"}
        console.print(f"execution: device {run['device']}, dtype {run['dtype']}{factors.get(run.get('factors'), '')}",
                      highlight=False)
    table = Table(title=f"wherefrom {estimate.command} --dry-run: {estimate.n_sequences} sequences, "
                        f"{estimate.n_tokens} tokens", title_justify="left")
    table.add_column("stage")
    table.add_column("peak memory", justify="right")
    table.add_column("time", justify="right")
    table.add_column("from", overflow="fold")
    for stage in estimate.stages:
        table.add_row(stage.name, human_bytes(stage.peak_bytes), human_seconds(stage.seconds), stage.detail)
    table.add_section()
    table.add_row("[bold]total[/]", f"[bold]{human_bytes(estimate.peak_bytes)}[/]",
                  f"[bold]{human_seconds(estimate.total_seconds)}[/]", "peak of the stages; sum of the times")
    console.print(table)
    if estimate.disk:
        _print_disk(estimate, console)
    for note in estimate.notes:
        console.print(f"[dim]• {note}[/]")
    console.print("[dim]• nothing was written[/]")


def _print_disk(estimate: CostEstimate, console: Console) -> None:
    disk = Table(title="outputs", title_justify="left")
    disk.add_column("file")
    disk.add_column("size", justify="right")
    for name, size in estimate.disk.items():
        disk.add_row(name, human_bytes(size))
    disk.add_section()
    disk.add_row("[bold]total[/]", f"[bold]{human_bytes(estimate.disk_bytes)}[/]")
    console.print(disk)
