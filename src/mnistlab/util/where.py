"""Where this process runs, for output that suits it: the one home of notebook and pytest detection.

A Jupyter or Colab kernel runs IPython's `ZMQInteractiveShell` (Colab also loads `google.colab`);
IPython's terminal shell and plain `python` are not notebooks. pytest sets `PYTEST_CURRENT_TEST`
while a test runs. IPython is looked up in `sys.modules`, never imported: a process that has not
loaded it is not a kernel, and asking must not cost its import.
"""

from __future__ import annotations

import os
import sys

__all__ = ["in_notebook", "under_pytest"]

NOTEBOOK_SHELL = "ZMQInteractiveShell"
PYTEST_VARIABLE = "PYTEST_CURRENT_TEST"


def in_notebook() -> bool:
    """True inside a Jupyter or Colab kernel (its outputs are rendered as rich display data)."""
    if "google.colab" in sys.modules:
        return True
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    if get_ipython is None:
        return False
    try:
        shell = get_ipython()
    except Exception:  # a half-initialised IPython: not a kernel we can display in
        return False
    return shell is not None and type(shell).__name__ == NOTEBOOK_SHELL


def under_pytest() -> bool:
    """True while pytest runs a test in this process."""
    return bool(os.environ.get(PYTEST_VARIABLE))
