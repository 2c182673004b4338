"""The explorer: a local web page (and JSON API) to ask the model a question and see which training sequences
influenced its answer, token by token (`wherefrom serve`)."""

from wherefrom.explorer.app import create_app
from wherefrom.explorer.session import ExplorerSession

__all__ = ["ExplorerSession", "create_app"]
