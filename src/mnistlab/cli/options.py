"""Options several command modules share (app.py, store_commands.py), each defined once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

# Defaults to runs/store.py's DEFAULT_ROOT, the one home of the folder's name, which --help shows.
StoreOption = Annotated[Path, typer.Option("--store", envvar="MNISTLAB_STORE", help="Run store folder.")]

__all__ = ["StoreOption"]
