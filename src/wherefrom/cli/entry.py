"""The `wherefrom` executable (and `python -m wherefrom`): the command line, imported with Python's cyclic garbage
collector paused (collector.py), since importing torch's stack is most of a command's start-up."""

from __future__ import annotations

from wherefrom.collector import collector_paused


def main() -> None:
    """Run the command line on ``sys.argv``."""
    with collector_paused(freeze=True):  # what the import makes lives as long as the process
        from wherefrom.cli.main import app
    app(prog_name="wherefrom")
