"""The `wherefrom` command line. Each command group lives in its own module and registers on the shared app."""

# Importing a module registers its commands, in this order in `wherefrom --help`.
from wherefrom.cli import passes  # noqa: F401, I001
from wherefrom.cli import results  # noqa: F401
from wherefrom.cli import evaluate  # noqa: F401
from wherefrom.cli import units  # noqa: F401
from wherefrom.cli import demo  # noqa: F401
from wherefrom.cli import serve  # noqa: F401
from wherefrom.cli import check  # noqa: F401
from wherefrom.cli import validate  # noqa: F401
from wherefrom.cli import compare  # noqa: F401
from wherefrom.cli.common import app

__all__ = ["app"]
