"""Live export (`--log-to`): each epoch's metrics to TensorBoard or MLflow as the epoch ends.

`LiveLog` is a listener (runs/events.py): the local runner and the Ray coordinator emit the same
events in the coordinating process, so both stream the same way. It writes each run through
tracking.py's steps (start, epochs, end) and mapping, so a study streamed live and one exported
afterwards with `export-runs` look the same. A run's log starts from what the store holds (a run
resumed from a checkpoint brings its earlier epochs along), and starts over when an epoch comes
that was logged already (a Ray retry trains epochs again after its checkpoint): the live log
always equals the store. Runs already finished before the study started are not streamed
(`export-runs` writes them).

Logging never stops training: a destination that fails (a server gone, a full disk) is one line
to `on_error`, and that destination is left out for the rest of the study.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnistlab.errors import MnistlabError
from mnistlab.interop import tracking
from mnistlab.runs.events import EpochEnded, Event
from mnistlab.runs.records import RunRecord
from mnistlab.runs.store import RunStore
from mnistlab.training.history import RunEnd
from mnistlab.util.atomic import check_target
from mnistlab.util.safetext import one_line

__all__ = ["LiveLog", "LogTarget", "parse_log_to"]

FLAG = "--log-to"
USAGE = "give tensorboard:DIR, or mlflow:URI (a tracking URI, or a folder used as an mlruns file store)"


@dataclass(frozen=True)
class LogTarget:
    """Where `--log-to KIND:WHERE` streams to; `where` is a folder (tensorboard) or an MLflow URI."""

    kind: str
    where: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.where}"


def parse_log_to(value: str) -> LogTarget:
    """`KIND:WHERE` checked before anything is written: the kind, its extra, and the destination
    (a folder that can be one; an MLflow server that answers). One line otherwise."""
    kind, colon, where = str(value).partition(":")
    if not colon or kind not in tracking.TARGETS or not where.strip():
        raise MnistlabError(f"{FLAG} {value!r}: {USAGE}")
    if kind == "tensorboard":
        tracking.tensorboard_check(FLAG)
        check_target(where, folder=True)
    else:
        tracking.mlflow_parts(FLAG)
        tracking.mlflow_uri(where, create=False)
    return LogTarget(kind, where)


def _stderr_line(line: str) -> None:
    sys.stderr.write(one_line(line) + "\n")
    sys.stderr.flush()


class _TensorBoard:
    """One folder per run under the target folder, as `export-runs --to tensorboard` writes them."""

    def __init__(self, where: str) -> None:
        self.folder = Path(where)
        self.writers: dict[int, Any] = {}

    def start(self, run: RunRecord, store: RunStore, epochs: tracking.Epochs) -> None:
        self._drop(run.id)
        log_dir = self.folder / tracking.run_name(run)
        if log_dir.exists():  # an earlier export or live log of this run: replaced, not added to
            shutil.rmtree(log_dir)
        self.writers[run.id] = tracking.tensorboard_start(log_dir, FLAG)
        tracking.tensorboard_epochs(self.writers[run.id], epochs)

    def epochs(self, run_id: int, epochs: tracking.Epochs) -> None:
        tracking.tensorboard_epochs(self.writers[run_id], epochs)

    def end(self, run: RunRecord) -> None:
        tracking.tensorboard_end(self.writers.pop(run.id), run)

    def _drop(self, run_id: int) -> None:
        writer = self.writers.pop(run_id, None)
        if writer is not None:
            writer.close()

    def close(self) -> None:
        for run_id in list(self.writers):
            self._drop(run_id)


class _Mlflow:
    """One MLflow run per store run, as `export-runs --to mlflow` writes them."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.client = tracking.mlflow_parts(FLAG).MlflowClient(tracking_uri=tracking.mlflow_uri(where))
        self.experiments: dict[str, str] = {}
        self.runs: dict[int, str] = {}

    def start(self, run: RunRecord, store: RunStore, epochs: tracking.Epochs) -> None:
        if run.experiment not in self.experiments:
            self.experiments[run.experiment] = tracking.mlflow_experiment(self.client, run.experiment)
        self.runs[run.id] = tracking.mlflow_start(self.client, self.experiments[run.experiment], run, store)
        self.epochs(run.id, epochs)

    def epochs(self, run_id: int, epochs: tracking.Epochs) -> None:
        tracking.mlflow_epochs(self.client, self.runs[run_id], epochs, int(time.time() * 1000))

    def end(self, run: RunRecord) -> None:
        tracking.mlflow_end(self.client, self.runs.pop(run.id), run, int(time.time() * 1000))

    def close(self) -> None:
        for mlflow_run in self.runs.values():  # runs cut short (Ctrl-C, an error): not finished
            self.client.set_terminated(mlflow_run, "KILLED")
        self.runs.clear()


class LiveLog:
    """A listener streaming a study to `targets`, reading each run's record from `store` (the
    coordinating process's own: listeners run in its thread). Use it in a `with` block, or `close` it."""

    def __init__(self, targets: Iterable[LogTarget], store: RunStore,
                 on_error: Callable[[str], None] = _stderr_line) -> None:
        self.store, self.on_error = store, on_error
        self.sinks: list[tuple[LogTarget, Any]] = []
        for target in targets:
            try:
                self.sinks.append((target, _TensorBoard(target.where) if target.kind == "tensorboard"
                                   else _Mlflow(target.where)))
            except Exception as error:  # noqa: BLE001  (a destination gone since it was checked)
                self._stopped(target, error)
        self.logged: dict[int, int] = {}  # run id -> the last epoch logged

    def __call__(self, event: Event) -> None:
        if not self.sinks or getattr(event, "run_id", None) is None:
            return
        if isinstance(event, EpochEnded):
            self._epoch(event.run_id, event.epoch, tracking.epoch_scalars(event.metrics))
        elif isinstance(event, RunEnd):
            self._end(event.run_id)

    def _epoch(self, run_id: int, epoch: int, scalars: dict[str, float]) -> None:
        if run_id in self.logged and epoch > self.logged[run_id]:
            self._each(lambda sink: sink.epochs(run_id, [(epoch, scalars)]))
            self.logged[run_id] = epoch
            return
        self._start(run_id)  # the first epoch heard, or one logged before: (re)start from the store

    def _start(self, run_id: int) -> None:
        run = self.store.get_run(run_id)
        epochs = tracking.stored_epochs(self.store, run)
        self._each(lambda sink: sink.start(run, self.store, epochs))
        self.logged[run_id] = epochs[-1][0] if epochs else 0

    def _end(self, run_id: int) -> None:
        if run_id not in self.logged:
            self._start(run_id)  # a run that failed before its first epoch still gets its run
        run = self.store.get_run(run_id)
        # epochs stored without an event (a diverged run's last one) come along before the end
        late = [item for item in tracking.stored_epochs(self.store, run) if item[0] > self.logged[run_id]]
        if late:
            self._each(lambda sink: sink.epochs(run_id, late))
        self._each(lambda sink: sink.end(run))
        del self.logged[run_id]

    def _each(self, call: Callable[[Any], None]) -> None:
        for target, sink in list(self.sinks):
            try:
                call(sink)
            except Exception as error:  # noqa: BLE001  (whatever a logger raises, training goes on)
                self._stopped(target, error)
                self.sinks = [(t, s) for t, s in self.sinks if s is not sink]
                try:
                    sink.close()
                except Exception:  # noqa: BLE001  (it failed already, and the line said so)
                    pass

    def _stopped(self, target: LogTarget, error: BaseException) -> None:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        self.on_error(f"{FLAG} {target}: stopped logging ({message}); training goes on")

    def close(self) -> None:
        sinks, self.sinks = self.sinks, []
        for target, sink in sinks:
            try:
                sink.close()
            except Exception as error:  # noqa: BLE001  (the study is over or stopping: one line)
                self._stopped(target, error)

    def __enter__(self) -> LiveLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
