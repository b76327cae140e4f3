"""Reading the code of a .py file or a Jupyter notebook: its code cells, with IPython magics blanked.

Bad input is one line naming the file (and the cell): unreadable, not a notebook, a cell whose
source is neither text nor a list of lines, or JSON nested too deeply to parse.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from mnistlab.errors import MnistlabError

_MAGIC = re.compile(r"^\s*[%!]")


def blank_magics(code: str) -> str:
    """IPython magics and shell lines (`%matplotlib`, `!pip`) become blank lines: line numbers stay."""
    return "\n".join("" if _MAGIC.match(line) else line for line in code.split("\n"))


def code_cells(path: Path) -> list[tuple[int | None, str]]:
    """The code to read from a .py file (one piece, cell None) or a notebook (its code cells, numbered)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MnistlabError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MnistlabError(f"{path}: cannot read: {exc}") from None
    if path.suffix == ".ipynb":
        try:
            notebook = json.loads(text)
            cells = notebook["cells"]
        except RecursionError:
            raise MnistlabError(f"{path}: notebook JSON nested too deeply to read; refused") from None
        except (ValueError, KeyError, TypeError):
            raise MnistlabError(f"{path}: not a Jupyter notebook (no JSON 'cells' list)") from None
        if not isinstance(cells, list):
            raise MnistlabError(f"{path}: not a Jupyter notebook ('cells' is not a list)")
        code_cells: list[tuple[int | None, str]] = []
        for number, cell in enumerate(cells, start=1):
            if isinstance(cell, dict) and cell.get("cell_type") == "code":
                source = cell.get("source", "")
                if isinstance(source, list) and all(isinstance(line, str) for line in source):
                    source = "".join(source)
                if not isinstance(source, str):
                    raise MnistlabError(f"{path}: cell {number}: field 'source': must be text or a list of lines")
                code_cells.append((number, source))
        return code_cells
    if path.suffix != ".py":
        raise MnistlabError(f"{path}: import-keras reads .py and .ipynb files")
    return [(None, text)]
