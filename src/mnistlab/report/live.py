"""The report while its study runs: rewritten as runs finish, marked in progress, reloading itself.

Two drivers share `write_live`: `LiveReport`, a listener (runs/events.py) that `mnistlab run` uses,
and `watch_report`, which polls a store that another process or a Ray coordinator writes
(`mnistlab report NAME --watch`). While runs are pending or running, the page says "in progress: N
of M runs" and carries a `<meta http-equiv="refresh">`, so an open browser tab follows along; once
none is left it is the final report, with neither. Each page is written whole (writer.py, through
util/atomic), so a browser reloading it never sees half of one.

Building a report takes seconds (figures), so `LiveReport` never builds one in the training
thread: it wakes a thread of its own, which writes at most every `min_interval` seconds and only while
its writing stays within `budget` of the study's wall time (the last state is always written, by
`finish`). That thread reads the store through a RunStore of its own
(one is never shared between threads) and only reads. A report that fails to build or write is
one line to `on_error`; the study goes on and loses nothing (the store holds every run).
Its thread measures itself (`write_seconds`, `write_cpu_seconds`), so its share of a study's time can
be reported (benchmarks/bench_live_display.py, issue 20).
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from mnistlab.data.datasets import Dataset
from mnistlab.report.content import InProgress
from mnistlab.report.folders import REPORTS_DIR
from mnistlab.report.writer import ReportPaths, experiment_config, report_images, write_report
from mnistlab.runs.events import Event, RoundEnded
from mnistlab.runs.store import RunStore, open_existing_store
from mnistlab.training.history import COMPLETED, PENDING, RUNNING, RunEnd
from mnistlab.util.safetext import one_line

__all__ = ["DEFAULT_BUDGET", "DEFAULT_MIN_INTERVAL", "DEFAULT_POLL_SECONDS", "DEFAULT_REFRESH_SECONDS", "LiveReport", "snapshot",
           "watch_report", "write_live"]

DEFAULT_REFRESH_SECONDS = 5  # how often an open page reloads itself
DEFAULT_MIN_INTERVAL = 5.0  # at most one report per this many seconds while a study trains
# The share of the study's wall time the report's thread may spend writing while it trains. A report
# costs about a second of CPU (its figures) and the machine may have as few cores as the study uses,
# so every second written is nearly a second taken from training (issue 20: under 2%).
DEFAULT_BUDGET = 0.02
# What a report costs before one is measured (a 4-model report on a 2-core Xeon: 0.6-1.2 s).
FIRST_WRITE_GUESS = 1.0
DEFAULT_POLL_SECONDS = 5.0  # how often `report --watch` looks at the store

Snapshot = tuple[tuple[int, str], ...]


def _stderr_line(line: str) -> None:
    sys.stderr.write(one_line(line) + "\n")
    sys.stderr.flush()


def snapshot(store: RunStore, experiment: str) -> Snapshot:
    """Each run of the experiment with its status, a running run counted as pending: a report is
    rewritten when this changes, so when a run finishes (not each time one starts)."""
    return tuple(sorted((run.id, PENDING if run.status == RUNNING else run.status) for run in store.runs(experiment)))


def _settled(state: Snapshot, run_ids: Sequence[int] | None) -> bool:
    """No run left to train: of `run_ids` when given (the round a runner handed out), else of all."""
    chosen = set(run_ids) if run_ids is not None else None
    return all(status not in (PENDING, RUNNING) for run_id, status in state if chosen is None or run_id in chosen)


def write_live(store: RunStore, experiment: str, out: Path, images: Dataset | None, state: Snapshot,
               refresh_seconds: int, run_ids: Sequence[int] | None = None) -> ReportPaths | None:
    """The report for `state` (snapshot's): final when settled (MnistlabError when no run completed,
    as `report` says), else marked in progress, or None while no run has completed yet."""
    if _settled(state, run_ids):
        return write_report(store, experiment, out, dataset=images)
    if not any(status == COMPLETED for _, status in state):
        return None  # a report needs a completed run; the next finished run may be one
    done = sum(status not in (PENDING, RUNNING) for _, status in state)
    live = InProgress(done, len(state), max(1, math.ceil(refresh_seconds)))
    return write_report(store, experiment, out, dataset=images, live=live)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _images_for(store: RunStore, experiment: str, dataset: str | None, data_dir: Path | str | None) -> Dataset | None:
    """The dataset whose test images the report shows: `dataset`, else the experiment's stored one."""
    return report_images(dataset or experiment_config(store, experiment).get("dataset", "mnist"), data_dir)


class LiveReport:
    """A listener that keeps the report of `experiment` (in the store at `root`) up to date in `out`
    (default ROOT/reports).

    Hand it to `run` (`listeners=[live]`), then call `finish()`: it writes the last state and
    returns the final report's paths (None while runs are left to another process: the page stays
    in progress). As a context manager, leaving the block stops the thread without writing more.
    `dataset`: the dataset whose test images the report shows (default: the stored experiment's),
    loaded once, in the report's thread. `writer`: write_live's signature (tests inject a failing one).
    `budget`: the share of the wall time since the start its thread may spend writing while the study
    trains (a write waits until its expected cost, the last write's, fits; 1 or more: no such limit);
    finish's last report is written whatever it costs.

    What it cost: `write_seconds` and `write_cpu_seconds` (that thread's CPU time), spent by its
    thread while the study trained; `finish_seconds`, finish's last report; `writes`, reports written."""

    def __init__(self, root: Path | str, experiment: str, out: Path | str | None = None, dataset: str | None = None,
                 data_dir: Path | str | None = None, *, refresh_seconds: float = DEFAULT_REFRESH_SECONDS,
                 min_interval: float = DEFAULT_MIN_INTERVAL, budget: float = DEFAULT_BUDGET,
                 on_error: Callable[[str], None] = _stderr_line,
                 writer: Callable[..., ReportPaths | None] = write_live) -> None:
        if not budget > 0:
            raise ValueError(f"budget must be a positive share of the wall time, got {budget!r}")
        self.root, self.experiment = Path(root), experiment
        self.budget, self._started, self._expected = budget, time.monotonic(), FIRST_WRITE_GUESS
        self.out = Path(out) if out is not None else self.root / REPORTS_DIR
        self.refresh_seconds, self.min_interval, self.on_error, self.writer = refresh_seconds, min_interval, on_error, writer
        self._dataset_name, self._data_dir = dataset, data_dir
        self._images: Dataset | None = None
        self._loaded = False
        self._run_ids: tuple[int, ...] | None = None
        self._written: Snapshot | None = None
        self._paths: ReportPaths | None = None
        self._last_error = ""
        self.write_seconds = self.write_cpu_seconds = self.finish_seconds = 0.0
        self.writes = 0  # reports written, finish's included
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mnistlab-live-report", daemon=True)
        self._thread.start()

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunEnd):
            self._wake.set()  # only a flag: the training thread never waits for a report
        elif isinstance(event, RoundEnded) and event.experiment == self.experiment:
            self._run_ids = event.run_ids

    def _loop(self) -> None:
        store: RunStore | None = None
        last = -math.inf
        try:
            while not self._stop.is_set():
                self._wake.wait()
                # Throttled: wait out the interval, then until the next write fits the budget (finish()
                # cuts either wait short, and writes the last state).
                if self._stop.is_set() or self._stop.wait(max(0.0, last + self.min_interval - time.monotonic())):
                    break
                if self._stop.wait(max(0.0, self._budget_allows_at() - time.monotonic())):
                    break
                self._wake.clear()
                last = time.monotonic()
                cpu, writes = time.thread_time(), self.writes
                try:
                    store = store or open_existing_store(self.root)
                    self._write(store)
                except Exception as error:  # noqa: BLE001  (whatever breaks a report, training goes on)
                    self._failed(error)
                finally:
                    spent = time.monotonic() - last
                    self.write_seconds += spent
                    if self.writes > writes:  # a report was built: what the next one will cost
                        self._expected = spent
                    self.write_cpu_seconds += time.thread_time() - cpu
        finally:
            if store is not None:
                store.close()

    def _budget_allows_at(self) -> float:
        """When the seconds written so far plus the next write's expected cost are `budget` of the wall time."""
        if self.budget >= 1:
            return -math.inf
        return self._started + (self.write_seconds + self._expected) / self.budget

    def _write(self, store: RunStore) -> ReportPaths | None:
        state = snapshot(store, self.experiment)
        settled = _settled(state, self._run_ids)
        if state == self._written:
            return self._paths if settled else None  # nothing changed since the last report
        if not self._loaded:
            self._images, self._loaded = _images_for(store, self.experiment, self._dataset_name, self._data_dir), True
        paths = self.writer(store, self.experiment, self.out, self._images, state, self.refresh_seconds,
                            self._run_ids)
        if paths is not None:
            self._written, self._paths = state, paths
            self.writes += 1
        return paths if settled else None

    def _failed(self, error: BaseException) -> None:
        line = f"live report {self.out}: not written ({_first_line(error)}); training goes on"
        if line != self._last_error:  # the same failure again is not news
            self.on_error(line)
        self._last_error = line

    def _halt(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join()

    def finish(self, run_ids: Sequence[int] | None = None) -> ReportPaths | None:
        """Stop the thread and write the last state: the final report's paths when no run is left
        (its errors raised, as `report` raises them), else None. `run_ids`: the runs that must be
        finished for that (default: the last round heard, else all of the experiment's)."""
        self._halt()
        if run_ids is not None:
            self._run_ids = tuple(run_ids)
        started = time.monotonic()
        try:
            with open_existing_store(self.root) as store:
                return self._write(store)
        finally:
            self.finish_seconds = time.monotonic() - started

    def __enter__(self) -> LiveReport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._halt()


def watch_report(root: Path | str, experiment: str, out: Path | str | None = None, dataset: str | None = None,
                 data_dir: Path | str | None = None, *, poll_seconds: float = DEFAULT_POLL_SECONDS,
                 refresh_seconds: float | None = None, on_write: Callable[[ReportPaths, bool], None] | None = None,
                 on_error: Callable[[str], None] = _stderr_line) -> ReportPaths | None:
    """The report of a study that another process or a Ray coordinator is training, rewritten in
    `out` (default ROOT/reports) whenever its runs change, until none is pending or running (then
    the final report, whose paths are returned) or Ctrl-C (None: the last page stays).

    `on_write(paths, final)` hears each report written; `refresh_seconds` defaults to `poll_seconds`.
    A report that fails is one line to `on_error` and the watch goes on; the final one's error is
    raised, as is an experiment the store does not hold."""
    out = Path(out) if out is not None else Path(root) / REPORTS_DIR
    refresh = refresh_seconds if refresh_seconds is not None else poll_seconds
    written: Snapshot | None = None
    last_error = ""
    with open_existing_store(root) as store:
        try:
            images = _images_for(store, experiment, dataset, data_dir)  # an unknown experiment: one line, here
            while True:
                state = snapshot(store, experiment)
                settled = _settled(state, None)
                if state != written:
                    try:
                        paths = write_live(store, experiment, out, images, state, refresh)
                    except Exception as error:  # noqa: BLE001  (the watched study goes on either way)
                        if settled:
                            raise
                        line = f"live report {out}: not written ({_first_line(error)}); still watching"
                        if line != last_error:
                            on_error(line)
                        last_error, paths = line, None
                    if paths is not None:
                        written = state
                        if on_write is not None:
                            on_write(paths, settled)
                    if settled:
                        return paths
                time.sleep(poll_seconds)
        except KeyboardInterrupt:
            return None
