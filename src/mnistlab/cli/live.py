"""Watching a study from the command line: `run`'s live report and `--log-to`, `report --watch`.

The work is mnistlab.report.live's and mnistlab.interop.live_log's (through `mnistlab.api`); here
only how Typer offers it and the lines it says. Nothing heavy is imported until a command runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from mnistlab.cli.output import err_console, say

if TYPE_CHECKING:
    from mnistlab.report.live import LiveReport
    from mnistlab.report.writer import ReportPaths

__all__ = ["EveryOption", "LogToOption", "WatchOption", "live_report", "watched"]

LogToOption = Annotated[Optional[list[str]], typer.Option(
    "--log-to", help="Stream each epoch's metrics as it ends to tensorboard:DIR or mlflow:URI (a tracking URI or an "
                     "mlruns folder), as export-runs writes them; repeat for several.")]
WatchOption = Annotated[bool, typer.Option(
    "--watch", help="For a study another process or Ray is training: rewrite the report (marked in progress, "
                    "reloading itself) as runs finish, until none is left or Ctrl-C.")]
EveryOption = Annotated[Optional[float], typer.Option(
    "--every", min=0.1, help="With --watch: how often to look at the store, and how often the page reloads "
                             "(seconds; default 5).")]


def _warn(line: str) -> None:
    say(line, to=err_console)


@contextmanager
def live_report(study: Any, store: Path, data_dir: Path | None, enabled: bool) -> Iterator[LiveReport | None]:
    """`run`'s report while it trains (None with --no-report); leaving the block stops its thread.
    A report that cannot be written is one line on stderr, and training goes on."""
    if not enabled:
        yield None
        return
    from mnistlab import api

    with api.LiveReport(store, study.name, dataset=study.dataset, data_dir=data_dir, on_error=_warn) as live:
        yield live


def watched(experiment: str, store: Path, out: Path | None, data_dir: Path | None, every: float | None) -> ReportPaths:
    """`report --watch`: the final report's paths; Ctrl-C says so and ends the command (exit 0)."""
    from mnistlab import api

    paths = api.watch_report(store, api.experiment_name(experiment), out, data_dir=data_dir, on_error=_warn,
                             **({"poll_seconds": every} if every else {}))
    if paths is None:
        say("stopped watching; the report stays as it was last written")
        raise typer.Exit(0)
    return paths
