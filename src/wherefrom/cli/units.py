"""`wherefrom units`: the training sequences whose influence flows through one neuron, head or residual dimension."""

from __future__ import annotations

from pathlib import Path

import typer

from wherefrom.cli.common import QUIET, app, err, run_action


@app.command()
def units(
    out: Path = typer.Argument(..., help="Folder written by `wherefrom score`."),
    unit: str = typer.Option(..., "--unit", help="LAYER:NEURON, e.g. model.layers.3.mlp:17 or 3:17; a head: 3:head2 "
                                                 "(grouped-query key/value heads: 3:kv0); a residual dimension: "
                                                 "model.layers.3:dim5. `score --per-unit` lists the units by name."),
    among: int | None = typer.Option(None, "--among", help="Scan only each query's N best sequences by the folder's "
                                                           "scores (default: every scored sequence)."),
    save: Path | None = typer.Option(None, "--save", help="Folder to write the unit's scores into (a score folder "
                                                          "`wherefrom report` reads)."),
    top_k: int = typer.Option(5, "--top-k", help="Sequences shown per query."),
    quiet: bool = QUIET,
) -> None:
    """Rank training sequences by the influence that flows through one unit, with per-token scores (one pass)."""

    def action() -> None:
        from wherefrom.api import units as scan_unit
        from wherefrom.errors import WherefromError
        from wherefrom.outputs.summary import print_summary

        if not (out / "scores.safetensors").is_file():
            raise WherefromError(f"{out} holds no scores.safetensors: give the --out folder of `wherefrom score`.")
        if among is not None and among < 1:
            raise WherefromError(f"--among must be at least 1, got {among}.")
        result = scan_unit(out, unit, among=among, save=save, quiet=quiet)
        if not quiet:
            err.print(f"influence through {unit} only:")
            print_summary(result, top_k=top_k)
            if save is not None:
                err.print(f"scores through {unit} → [bold]{save}[/]")

    run_action(action)
