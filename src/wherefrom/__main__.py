"""`python -m wherefrom` runs the command line (also under torchrun)."""

from wherefrom.cli.entry import main

main()
