"""The local backend: pending runs trained in this process, one at a time or as seed bundles.

A unit is the pending (model, seed) tasks of one model and configuration (everything but the
seed), at most K of them (K = 1: one run at a time). Every run of a unit is claimed and kept fresh
by its own heartbeat while the unit trains (lease.py); each seed's epochs go to its own run as they
end, and each run is finished as a single run would be (tasks.finish_task). A damaged checkpoint
is set aside (kept for inspection) and only that seed restarts; a run whose claim is lost leaves
the unit and the others go on from their checkpoints.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Literal

from mnistlab.data.datasets import Dataset
from mnistlab.errors import CheckpointError, CheckpointWriteError, LeaseLost, MnistlabError
from mnistlab.experiments.definition import Experiment, Task
from mnistlab.runs.events import NO_LISTENERS, Events
from mnistlab.runs.lease import Heartbeat
from mnistlab.runs.records import RunRecord
from mnistlab.runs.store import RunStore, current_owner
from mnistlab.runs.tasks import (CHECKPOINT_DIR, Pending, ReporterFor, RunOutcome, cannot_write, execute_task,
                                 claim_task, finish_task, guard_training, record_epoch, restart, task_config)
from mnistlab.training.bundle import AUTO_PROBE_SECONDS, BundleChoice, bundle_capacity, choose_bundle, fit_bundle
from mnistlab.training.cost import probe_bundle
from mnistlab.training.checkpoint import read_checkpoint_info
from mnistlab.training.config import resolve_device
from mnistlab.training.history import History, Reporter
from mnistlab.util.strict import whole_number

__all__ = ["LocalBackend", "auto_bundle", "execute_unit", "group_units", "parse_bundle", "run_units", "train_one", "unit_key"]

Bundle = int | Literal["auto"]


def parse_bundle(value: Any) -> Bundle:
    """`--bundle K|auto`: a whole number >= 1 or 'auto'; anything else is a one-line error."""
    if value == "auto":
        return "auto"
    text = str(value).strip()
    number = value if isinstance(value, int) and not isinstance(value, bool) else whole_number(text)
    if number is None or number < 1:
        raise MnistlabError(f"--bundle {value!r}: give the number of seeds to train together (1 or more) or 'auto'")
    return number


class LocalBackend:
    """Trains in this process (tasks.Backend); `bundle`: seeds of one model trained together."""

    def __init__(self, bundle: Bundle = 1) -> None:
        self.bundle = bundle
        self.source: str | None = None  # the experiment file, for the runs' provenance

    def check(self, experiment: Experiment, source: str) -> None:
        """Nothing to check before the tasks are expanded: the device is checked in the session."""

    @contextmanager
    def session(self, experiment: Experiment, source: str) -> Iterator[None]:
        try:  # the device is this (local) backend's to check
            resolve_device(experiment.defaults.device)
        except MnistlabError as exc:
            raise MnistlabError(f"{source}: experiment '{experiment.name}': field 'defaults.device': {exc}") from None
        self.source = source
        yield

    def train(self, store: RunStore, pending: Pending, data: Dataset, reporter_for: ReporterFor | None,
              outcome: RunOutcome, events: Events) -> None:
        run_units(store, pending, data, self.bundle, reporter_for, current_owner(), outcome, events, self.source)


def unit_key(task: Task) -> str:
    """Everything about a task but its seed: tasks with equal keys can share a bundle."""
    fields = {**task.run_config(), "experiment": task.experiment, "dataset": task.dataset,
              "protocol": task.protocol, "device": task.device, "max_params": task.max_params,
              "max_activation_mib": task.max_activation_mib, "patience": task.patience, "threads": task.threads,
              "factors": list(task.factors)}
    return json.dumps(fields, sort_keys=True, default=str)


def auto_bundle(task: Task, dataset: Dataset, seeds: int, probe: Callable[[int], float] | None = None) -> BundleChoice:
    """`--bundle auto` for `seeds` pending seeds of a task's model: the bundle size a short measured probe on
    this device finds fastest, never one slower than one seed at a time (bundle.choose_bundle)."""
    def measured(k: int) -> float:
        return probe_bundle(task.spec, k, precision=task.precision, seconds=AUTO_PROBE_SECONDS, threads=task.threads,
                            device=task.device)

    capacity = bundle_capacity(task.spec, dataset, task_config(task, None))
    return choose_bundle(seeds, capacity, probe or measured)


def group_units(pending: Pending, bundle: Bundle, dataset: Dataset, notes: dict[int, str] | None = None) -> list[Pending]:
    """Pending tasks → units of at most `bundle` tasks of one model and configuration, in order
    (bundle 1: each task alone, in the order given). With "auto", `notes` receives each run's probe note."""
    if bundle == 1:
        return [[item] for item in pending]
    groups: dict[str, Pending] = {}
    for task, record in pending:
        groups.setdefault(unit_key(task), []).append((task, record))
    units: list[Pending] = []
    for group in groups.values():
        size = bundle
        if bundle == "auto":
            choice = auto_bundle(group[0][0], dataset, len(group))
            size = choice.k
            if notes is not None:
                notes.update({record.id: choice.note() for _, record in group})
        units += [group[start : start + size] for start in range(0, len(group), size)]
    return units


def execute_unit(tasks: list[Task], dataset: Dataset, work_dirs: list[Path], reporter: Reporter | None = None,
                 on_epoch: Callable[[int, int, dict[str, float]], None] | None = None) -> list[History]:
    """Train the tasks of one unit as a bundle, each checkpointing into (and resuming from) its folder."""
    configs = [task_config(task, work_dir) for task, work_dir in zip(tasks, work_dirs)]
    return fit_bundle(tasks[0].spec, dataset, configs, reporter=reporter, on_epoch=on_epoch)


def run_units(store: RunStore, pending: Pending, dataset: Dataset, bundle: Bundle,
              reporter_for: ReporterFor | None, owner: str, outcome: RunOutcome,
              events: Events = NO_LISTENERS, source: str | None = None) -> None:
    """Claim and train each unit in turn, filling in `outcome`; `source`: the experiment file (provenance)."""
    notes: dict[int, str] = {}
    for unit in group_units(pending, bundle, dataset, notes):
        claimed: Pending = []
        for task, record in unit:
            if claim_task(store, task, record, owner, source):
                claimed.append((task, record))
                if record.id in notes:  # what --bundle auto measured, on the run it chose for
                    store.add_note(record.id, notes[record.id])
            else:
                outcome.skipped_claimed.append(record.id)
        if not claimed:
            continue
        reporter = reporter_for(claimed[0][0]) if reporter_for else None

        def train(claimed: Pending = claimed, reporter: Reporter | None = reporter) -> None:
            if len(claimed) > 1:
                _train_unit(store, claimed, dataset, reporter, owner, outcome, events)
                return
            (task, record), = claimed
            try:
                train_one(store, record, task, dataset, reporter, owner, events)
            except LeaseLost:
                # Our claim went stale (say the machine slept) and another process took the run
                # over; it continues from the checkpoint, we move on.
                outcome.lost.append(record.id)
                return
            outcome.trained.append(record.id)

        guard_training(store, claimed, reporter, owner, outcome, train, events)


def train_one(store: RunStore, record: RunRecord, task: Task, dataset: Dataset, reporter: Reporter | None,
              owner: str | None = None, events: Events = NO_LISTENERS) -> None:
    """Train one claimed run from its last checkpoint and record it, keeping its claim fresh."""
    owner = owner or current_owner()
    with Heartbeat(store.root, record.id, owner, store.heartbeat_seconds) as heartbeat:
        work_dir = store.run_dir(record.id) / CHECKPOINT_DIR

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            heartbeat.check()  # a lost claim stops the run before it writes anything more
            record_epoch(store, record, task, epoch, metrics, owner, events)

        try:
            try:
                info = read_checkpoint_info(work_dir)
                # Epochs stored after the last checkpoint are replayed identically; drop them first.
                store.truncate_epochs(record.id, info["epoch"] if info else 0, owner=owner)
                history = execute_task(task, dataset, work_dir, reporter, on_epoch=on_epoch)
            except CheckpointError as error:
                restart(store, record, work_dir, error, owner)
                history = execute_task(task, dataset, work_dir, reporter, on_epoch=on_epoch)
        except (OSError, CheckpointWriteError) as exc:
            raise cannot_write(store, record, task, exc, owner) from None
        finish_task(store, record, task, history, dataset, owner, reporter, events=events)


def _train_unit(store: RunStore, unit: Pending, dataset: Dataset, reporter: Reporter | None, owner: str,
                outcome: RunOutcome, events: Events) -> None:
    with ExitStack() as stack:
        beats = {record.id: stack.enter_context(Heartbeat(store.root, record.id, owner, store.heartbeat_seconds))
                 for _, record in unit}
        active = list(unit)
        while active:
            work_dirs = [store.run_dir(record.id) / CHECKPOINT_DIR for _, record in active]

            def on_epoch(index: int, epoch: int, metrics: dict[str, float], active: Pending = active) -> None:
                task, record = active[index]
                beats[record.id].check()
                record_epoch(store, record, task, epoch, metrics, owner, events)

            try:
                for (_, record), work_dir in zip(active, work_dirs):
                    info = _checkpoint_or_restart(store, record, work_dir, owner)
                    # Epochs stored after the last checkpoint are replayed identically; drop them first.
                    store.truncate_epochs(record.id, info["epoch"] if info else 0, owner=owner)
                histories = execute_unit([task for task, _ in active], dataset, work_dirs, reporter, on_epoch)
            except CheckpointError as error:
                where = getattr(error, "out_dir", None)
                if where not in work_dirs:
                    raise
                record = active[work_dirs.index(where)][1]
                restart(store, record, Path(where), error, owner)
                continue  # the others resume from their checkpoints
            except LeaseLost:
                # A claim went stale and was taken over: that run is its new owner's; the rest go on.
                gone = [record.id for _, record in active if beats[record.id].lost]
                if not gone:
                    raise
                outcome.lost += gone
                active = [(task, record) for task, record in active if record.id not in gone]
                continue
            except (OSError, CheckpointWriteError) as exc:
                for task, record in active:
                    error = cannot_write(store, record, task, exc, owner)
                raise error from None
            for (task, record), history in zip(active, histories):
                finish_task(store, record, task, history, dataset, owner, reporter, events=events)
                outcome.trained.append(record.id)
            return


def _checkpoint_or_restart(store: RunStore, record: RunRecord, work_dir: Path, owner: str) -> dict[str, Any] | None:
    try:
        return read_checkpoint_info(work_dir)
    except CheckpointError as error:
        restart(store, record, work_dir, error, owner)
        return None
