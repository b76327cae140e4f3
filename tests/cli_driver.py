"""The one way tests drive the `mnistlab` command: in-process (`run_cli`) or as a real process
(`spawn_cli`, for signals and concurrency). Every CLI test imports these instead of its own copy."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnistlab.cli.app import main

SRC = Path(__file__).parents[1] / "src"


@dataclass(frozen=True)
class CliResult:
    """What one command did: its exit status and everything it printed."""

    exit_code: int
    stdout: str
    stderr: str

    def __iter__(self):  # `code, out, err = run_cli(...)`
        return iter((self.exit_code, self.stdout, self.stderr))

    @property
    def error_lines(self) -> list[str]:
        """The non-empty lines on stderr (a bad input must produce exactly one)."""
        return [line for line in self.stderr.splitlines() if line.strip()]


def run_cli(*args: str | os.PathLike[str]) -> CliResult:
    """Run `mnistlab ARGS...` in this process (rich resolves sys.stdout/stderr when it prints)."""
    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["mnistlab", *map(str, args)]
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                main()
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
    return CliResult(code, out.getvalue(), err.getvalue())


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def spawn_cli(*args: str | os.PathLike[str], env: dict[str, str] | None = None, **popen: Any) -> subprocess.Popen:
    """Start `python -m mnistlab ARGS...` as a child process importing this checkout's source."""
    environment = {**os.environ, **(env or {}), "PYTHONPATH": str(SRC)}
    popen.setdefault("text", True)
    # A shell starts background jobs with SIGINT ignored, and an ignored signal stays ignored across
    # exec: restore the default so that Ctrl-C tests behave the same however pytest was started.
    popen.setdefault("preexec_fn", _default_sigint)
    return subprocess.Popen([sys.executable, "-m", "mnistlab", *map(str, args)], env=environment, **popen)


def sigkill_after_checkpoint(process: subprocess.Popen, pointer: Path, epoch: int, seconds: float = 120) -> None:
    """SIGKILL ``process`` once the checkpoint ``pointer`` (checkpoint.json) holds ``epoch``: mid-way
    into the next epoch, so that a resume has a checkpoint and an unfinished epoch to replay."""
    deadline = time.monotonic() + seconds
    while not (pointer.exists() and json.loads(pointer.read_text())["epoch"] >= epoch):
        assert process.poll() is None, "the run finished before it could be killed"
        assert time.monotonic() < deadline, f"no checkpoint of epoch {epoch} within {seconds:g} s"
        time.sleep(0.005)
    time.sleep(0.05)  # into the next epoch
    process.send_signal(signal.SIGKILL)
    process.wait()
