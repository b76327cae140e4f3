"""The Ray backend's coordinator: the one process that writes the store while a cluster trains.

The experiment → tasks → store path is the runner's, as for the local backend (tasks.py);
what differs is who trains. The coordinator claims runs as it submits them (owner-conditional
writes, a heartbeat per run in flight: lease.py), keeps no more units in flight than the cluster
can run at once (so the rest stay pending, and a second coordinator or local process can share the
work), ships the dataset to the cluster once (ray.put: the workers need no data files, and every
node trains on the exact bytes the coordinator checked), and drains the workers' events: on an
attempt's start it truncates the run's stored epochs to the checkpoint it resumed from (and writes
the checkpoint's epochs, which a killed coordinator may not have received), then records each epoch
as it ends, so `mnistlab ls` / `show` show live progress. A finished unit's results (History and
final weights) are saved exactly as the local backend saves them.

Faults: a worker that dies is retried by Ray (``max_retries``) and its next attempt resumes from the
last checkpoint (worker.py fences attempts by folder); an exception raised by the training code
(a bad spec, a full disk) is not retried (``retry_exceptions=False``): its runs are marked failed once
and the study stops submitting, then raises it. A killed coordinator's claims are stale at once on
this host (its pid is gone; elsewhere after the lease), so running it again resubmits only the runs
that are not finished.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from mnistlab.data.datasets import Dataset
from mnistlab.errors import EnvironmentFailure, LeaseLost, MnistlabError
from mnistlab.experiments.definition import Experiment, Task
from mnistlab.nn.build import build_model
from mnistlab.runs.events import NO_LISTENERS, EpochEnded, Events
from mnistlab.runs.lease import Heartbeat
from mnistlab.runs.local import Bundle, group_units
from mnistlab.runs.ray.env import Connection, import_ray, is_loopback
from mnistlab.runs.ray.worker import RunResult, WorkItem, checkpoint_root, train_unit
from mnistlab.runs.store import ARTIFACTS_DIR, RunStore, current_owner
from mnistlab.runs.records import RunRecord
from mnistlab.runs.tasks import (Pending, Placement, ReporterFor, RunOutcome, claim_task, epoch_metrics, finish_task,
                                 report_failed)
from mnistlab.training.history import Reporter

__all__ = ["MAX_RETRIES", "RayBackend"]

# Retries after a worker process (or its node) dies; exceptions from training are never retried.
MAX_RETRIES = 3
POLL_SECONDS = 0.2  # how often the coordinator drains the workers' events while it waits


def check_placement(experiment: Experiment, source: str, gpus_per_task: float | None,
                    cpus_per_task: int | None) -> None:
    """Refuse placements no task could use, before anything is written."""
    if gpus_per_task is not None and (not math.isfinite(gpus_per_task) or gpus_per_task < 0):
        raise MnistlabError(f"--gpus-per-task {gpus_per_task}: give a fraction of a GPU (0.25) or a count (1, 2)")
    if gpus_per_task is not None and gpus_per_task > 1 and not float(gpus_per_task).is_integer():
        raise MnistlabError(f"--gpus-per-task {gpus_per_task}: above 1, Ray needs a whole number of GPUs")
    if cpus_per_task is not None and (isinstance(cpus_per_task, bool) or int(cpus_per_task) != cpus_per_task
                                      or cpus_per_task < 1):
        raise MnistlabError(f"--cpus-per-task {cpus_per_task}: give a whole number of CPUs, 1 or more")
    if experiment.defaults.device.startswith("cuda") and not gpus_per_task:
        raise MnistlabError(
            f"{source}: experiment '{experiment.name}': field 'defaults.device': {experiment.defaults.device} on Ray "
            "needs --gpus-per-task (1, or a fraction such as 0.25 to share a GPU between 4 tasks)")


def _slots(ray: Any, gpus: float, cpus: float) -> int:
    """Units the cluster can run at once (at least 1); infeasible requests are refused here, since
    Ray would keep them pending forever."""
    resources = ray.cluster_resources()
    limits = []
    for name, need in (("CPU", cpus), ("GPU", gpus)):
        if need <= 0:
            continue
        have = float(resources.get(name, 0.0))
        if have < need:
            raise MnistlabError(f"the Ray cluster has {have:g} {name}s, fewer than one task asks for ({need:g}): "
                                f"lower --{name.lower()}s-per-task or add nodes")
        limits.append(int(have // need))
    return max(1, min(limits, default=1))


class EventSink:
    """The actor workers report to; the coordinator takes everything received so far."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def put(self, event: tuple) -> None:
        self.events.append(event)

    def take(self) -> list[tuple]:
        events, self.events = self.events, []
        return events


@dataclass
class _Run:
    """A claimed run in flight."""

    task: Task
    record: RunRecord
    heartbeat: Heartbeat
    reporter: Reporter | None
    attempt: int = 0  # the newest attempt seen; events of older ones are ignored
    lost: bool = False


@dataclass
class _Unit:
    runs: dict[int, _Run] = field(default_factory=dict)


class Coordinator:
    """Submits units, drains events, finishes runs; see the module docstring."""

    def __init__(self, ray: Any, store: RunStore, data: Dataset, artifacts: Path,
                 reporter_for: Callable[[Task], Reporter] | None, options: dict[str, Any], threads: int | None,
                 slots: int, outcome: RunOutcome, events: Events = NO_LISTENERS) -> None:
        self.ray, self.store, self.data, self.artifacts, self.events = ray, store, data, artifacts, events
        self.reporter_for, self.threads, self.slots, self.outcome = reporter_for, threads, slots, outcome
        self.owner = current_owner()
        self.remote = ray.remote(train_unit).options(max_retries=MAX_RETRIES, retry_exceptions=False, **options)
        self.sink = ray.remote(EventSink).options(num_cpus=0, max_restarts=0).remote()
        self.data_ref = ray.put(data)
        self.flights: dict[Any, _Unit] = {}
        self.runs: dict[int, _Run] = {}
        self.source: str | None = None  # the experiment file, for the runs' provenance
        self.error: MnistlabError | None = None

    # -- submitting ------------------------------------------------------------------------

    def submit(self, unit: list[tuple[Task, RunRecord]]) -> None:
        claimed = _Unit()
        for task, record in unit:
            if not claim_task(self.store, task, record, self.owner, self.source):
                self.outcome.skipped_claimed.append(record.id)
                continue
            heartbeat = Heartbeat(self.store.root, record.id, self.owner, self.store.heartbeat_seconds)
            heartbeat.__enter__()
            run = _Run(task, record, heartbeat, self.reporter_for(task) if self.reporter_for else None)
            claimed.runs[record.id] = run
            self.runs[record.id] = run
        if not claimed.runs:
            return
        items = [WorkItem(run_id, run.task, checkpoint_root(self.artifacts, run_id))
                 for run_id, run in claimed.runs.items()]
        self.flights[self.remote.remote(items, self.data_ref, self.sink, self.threads)] = claimed

    def run(self, units: list[list[tuple[Task, RunRecord]]]) -> None:
        queue = deque(units)
        try:
            while queue or self.flights:
                while queue and self.error is None and len(self.flights) < self.slots:
                    self.submit(queue.popleft())
                if not self.flights:
                    break
                ready, _ = self.ray.wait(list(self.flights), num_returns=1, timeout=POLL_SECONDS)
                self.drain()
                for ref in ready:
                    self.settle(ref)
        finally:
            for run in list(self.runs.values()):
                self._release(run)
        if self.error is not None:
            raise self.error

    # -- events ------------------------------------------------------------------------------

    def drain(self) -> None:
        for event in self.ray.get(self.sink.take.remote()):
            kind, run_id, attempt = event[0], event[1], event[2]
            run = self.runs.get(run_id)
            if run is None or run.lost or attempt < run.attempt:
                continue  # finished, taken over, or an older attempt still talking: fenced off
            try:
                self._guarded(run, partial(self._handle, run, kind, attempt, event[3:]))
            except LeaseLost:
                continue

    def _handle(self, run: _Run, kind: str, attempt: int, body: tuple) -> None:
        run_id = run.record.id
        if kind == "start":
            worker, resumed, history = body
            run.attempt = attempt
            run.heartbeat.check()
            # Epochs stored after the checkpoint are trained again; those up to it come from the
            # checkpoint (a coordinator killed mid-study may never have received them).
            self.store.truncate_epochs(run_id, resumed, owner=self.owner)
            for metrics in history:
                self.store.record_epoch(run_id, int(metrics["epoch"]), epoch_metrics(metrics), owner=self.owner)
            if attempt > 1 or resumed:
                where = f"resumed after epoch {resumed} from the last checkpoint" if resumed else (
                    "started from epoch 1 (no earlier checkpoint reachable from its node)")
                self.store.add_note(run_id, f"Ray attempt {attempt} on {worker}: {where}")
        elif kind == "epoch" and attempt == run.attempt:
            epoch, metrics = body
            run.heartbeat.check()
            kept = epoch_metrics(metrics)
            self.store.record_epoch(run_id, int(epoch), kept, owner=self.owner)
            self.events.emit(EpochEnded(run_id, run.task.model_id, run.task.seed, int(epoch),
                                        run.task.spec.training.epochs, kept))
            if run.reporter is not None:
                run.reporter.end_epoch(int(epoch), run.task.spec.training.epochs, metrics)
        elif kind == "note":
            self.store.add_note(run_id, str(body[0]))

    def _guarded(self, run: _Run, write: Callable[[], None]) -> None:
        """A store write for ``run``; a lost claim drops the run (its new owner carries on)."""
        try:
            write()
        except LeaseLost:
            run.lost = True
            self.outcome.lost.append(run.record.id)
            self._release(run)
            raise

    # -- results -------------------------------------------------------------------------------

    def settle(self, ref: Any) -> None:
        unit = self.flights.pop(ref)
        try:
            results: list[RunResult] = self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as error:
            self._fail(unit, error.cause if getattr(error, "cause", None) is not None else error)
            return
        except self.ray.exceptions.RayError as error:  # the worker died MAX_RETRIES + 1 times, or its node did
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            self._fail(unit, EnvironmentFailure(f"the Ray task died {MAX_RETRIES + 1} times: {first}"))
            return
        for result in results:
            run = unit.runs.get(result.run_id)
            if run is None or run.lost:
                continue
            try:
                self._guarded(run, partial(self._finish, run, result, sorted(unit.runs)))
            except LeaseLost:
                continue
            self.outcome.trained.append(result.run_id)
            self._release(run)

    def _finish(self, run: _Run, result: RunResult, unit: list[int]) -> None:
        """Record a finished run through the path every backend shares (tasks.finish_task)."""
        history, task = result.history, run.task
        run.heartbeat.check()
        if result.weights is not None:
            model = build_model(task.spec, seed=task.seed)
            model.load_state_dict(result.weights)
            history.model = model
        host, _, pid = result.worker.rpartition(":")
        ray_final = {"worker": result.worker, "host": host, "pid": int(pid), "attempt": result.attempt,
                     "resumed_from_epoch": result.resumed_from, "unit": unit}  # unit: runs trained together
        try:
            # The run folder becomes a model folder, naming the worker's packages and machine, not ours.
            finish_task(self.store, run.record, task, history, self.data, self.owner, run.reporter,
                        versions=result.versions, extra={"ray": ray_final},
                        work_dir=checkpoint_root(self.artifacts, run.record.id), events=self.events)
        except EnvironmentFailure as error:
            report_failed(run.reporter, task, run.record, str(error), self.events)
            raise

    def _fail(self, unit: _Unit, cause: BaseException) -> None:
        message = str(cause) if isinstance(cause, MnistlabError) else f"{type(cause).__name__}: {cause}"
        for run_id, run in unit.runs.items():
            if run.lost:
                continue
            self.store.fail_run(run_id, message, owner=self.owner)
            self.outcome.failed.append(run_id)
            report_failed(run.reporter, run.task, run.record, message, self.events)
            self._release(run)
        if self.error is None:
            first = next(iter(unit.runs.values()))
            where = f"run {first.record.id} ({first.task.model_id}, seed {first.task.seed}) on Ray: "
            self.error = cause if isinstance(cause, MnistlabError) else MnistlabError(where + message)

    def _release(self, run: _Run) -> None:
        if self.runs.pop(run.record.id, None) is not None:
            run.heartbeat.__exit__(None, None, None)


class RayBackend:
    """Trains on a Ray cluster (tasks.Backend): `placement.address` (None: a private instance on this
    machine). A unit of work (one Ray task) is one run, or with `bundle` up to that many seeds of one
    model trained as a seed bundle ("auto": chosen by local.auto_bundle's probe on this, the coordinator's, machine).

    Checkpoints go under `placement.artifacts` (default: the store's artifacts folder, which must then
    be reachable by every worker for a retried task to resume; otherwise it restarts from epoch 1)."""

    def __init__(self, placement: Placement, bundle: Bundle = 1) -> None:
        self.placement, self.bundle = placement, bundle
        self.ray: Any = None
        self.slots = 1
        self.source: str | None = None

    def check(self, experiment: Experiment, source: str) -> None:
        import_ray(is_loopback(self.placement.address))  # a missing extra is one line, before anything else
        check_placement(experiment, source, self.placement.gpus_per_task, self.placement.cpus_per_task)

    @contextmanager
    def session(self, experiment: Experiment, source: str) -> Iterator[None]:
        with Connection(self.placement.address) as ray:
            self.ray, self.source = ray, source
            self.slots = _slots(ray, *self._shares())
            try:
                yield
            finally:
                self.ray = None

    def _shares(self) -> tuple[float, float]:
        return float(self.placement.gpus_per_task or 0), float(self.placement.cpus_per_task or 1)

    def train(self, store: RunStore, pending: Pending, data: Dataset, reporter_for: ReporterFor | None,
              outcome: RunOutcome, events: Events) -> None:
        gpus, cpus = self._shares()
        artifacts = self.placement.artifacts
        folder = Path(artifacts) if artifacts is not None else store.root / ARTIFACTS_DIR
        coordinator = Coordinator(self.ray, store, data, folder.absolute(), reporter_for,
                                  {"num_cpus": cpus, "num_gpus": gpus}, self.placement.cpus_per_task, self.slots,
                                  outcome, events)
        coordinator.source = self.source
        coordinator.run(group_units(pending, self.bundle, data))

