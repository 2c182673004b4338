"""Where `wherefrom demo` leaves what the explorer serves: checked before anything heavy is loaded."""

from __future__ import annotations

from pathlib import Path

from wherefrom.errors import WherefromError

DEMO_FOLDER = "wherefrom-demo"  # where `wherefrom demo` writes by default
DEMO_RUN = "run-ekfac"
DEMO_INDEX = "index"


def demo_sources(folder: str | Path) -> tuple[Path, Path | None]:
    """The EK-FAC run and the gradient index (None if not built) of a folder written by `wherefrom demo`."""
    folder = Path(folder)
    run = folder / DEMO_RUN
    if not (run / "manifest.json").is_file():
        raise WherefromError(f"{folder} holds no demo run ({run} is missing): run `wherefrom demo` first, or "
                             "give --index INDEX or --run RUN --corpus CORPUS.")
    index = folder / DEMO_INDEX
    return run, index if (index / "manifest.json").is_file() else None
