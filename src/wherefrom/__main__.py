"""`python -m wherefrom` runs the command line (also under torchrun)."""

from wherefrom.cli.main import app

app(prog_name="wherefrom")
