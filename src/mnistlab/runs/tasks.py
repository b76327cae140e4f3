"""What every backend shares: placement, outcome, task settings, the finish path and failures.

A backend (local.py, ray/) trains pending runs that the runner has already expanded and stored; it
implements ``Backend``. Everything a backend does to the store when a run ends goes through this
module, so the local and the Ray backend record a run the same way: ``finish_task`` (model folder,
the diverging epoch, final metrics, predictions, versions), ``cannot_write`` (a full disk or an
unwritable folder), ``guard_training`` (a crash, Ctrl-C or a bad input while runs are claimed).
This module imports no backend and not the runner.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from mnistlab.data.datasets import Dataset
from mnistlab.errors import CheckpointWriteError, EnvironmentFailure, MnistlabError, StoreError
from mnistlab.experiments.definition import Experiment, Task, expand
from mnistlab.experiments.reference import protocol_differences
from mnistlab.runs.events import NO_LISTENERS, EpochEnded, Events
from mnistlab.runs.records import RunRecord
from mnistlab.runs.store import RunStore
from mnistlab.spec.model import resolve
from mnistlab.trained.folder import save_trained
from mnistlab.training.config import TrainConfig
from mnistlab.training.engine import fit
from mnistlab.training.history import DIVERGED, EPOCH_METRICS, FINISHED_STATUSES, History, Reporter, RunEnd
from mnistlab.training.limits import check_tasks, dataset_shape, shape_of
from mnistlab.util.machine import package_versions
from mnistlab.util.provenance import collect
from mnistlab.util.netcheck import check_ray_address

CHECKPOINT_DIR = "checkpoint"
DAMAGED_SUFFIX = ".damaged-"  # checkpoint.damaged-1, -2, ...: set aside, kept for inspection
BACKENDS = ("local", "ray")

Pending = list[tuple[Task, RunRecord]]
ReporterFor = Callable[[Task], Reporter]


@dataclass
class RunOutcome:
    """What one `run_experiment` call did."""

    trained: list[int] = field(default_factory=list)
    skipped_finished: list[int] = field(default_factory=list)
    skipped_claimed: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)  # claims that went stale and were taken over
    run_ids: list[int] = field(default_factory=list)  # every run of the experiment as given


@dataclass(frozen=True)
class Placement:
    """Where a study's tasks train: this process ("local") or a Ray cluster, with each task's share.

    `address`: the cluster (host:port or "auto"; None: a private Ray instance on this machine);
    `gpus_per_task` / `cpus_per_task`: each task's Ray resources; `artifacts`: a checkpoint folder
    every worker reaches (None: the store's). The cluster fields are for the Ray backend only."""

    backend: str = "local"
    address: str | None = None
    gpus_per_task: float | None = None
    cpus_per_task: int | None = None
    artifacts: Path | str | None = None

    def check(self) -> None:
        """A known backend, and no cluster options for the local one."""
        if self.backend not in BACKENDS:
            raise MnistlabError(f"backend '{self.backend}': choose {' or '.join(BACKENDS)}")
        cluster = {"address": self.address, "gpus_per_task": self.gpus_per_task,
                   "cpus_per_task": self.cpus_per_task, "artifacts": self.artifacts}
        given = [name for name, value in cluster.items() if value is not None]
        if self.backend == "local" and given:
            raise MnistlabError(f"{', '.join(given)}: only for backend 'ray' (the local backend runs here)")
        if self.address is not None:
            # Its form and whether anything answers there, before any work (the store included).
            check_ray_address(self.address)


class Backend(Protocol):
    """How pending runs get trained. The runner calls, in order: ``check`` before anything is
    expanded or written; ``session`` around storing the runs and training them (a cluster connection,
    say); ``train`` with the claimed-to-be runs, which fills in ``outcome`` and emits ``events``."""

    def check(self, experiment: Experiment, source: str) -> None: ...

    def session(self, experiment: Experiment, source: str) -> AbstractContextManager[object]: ...

    def train(self, store: RunStore, pending: Pending, data: Dataset, reporter_for: ReporterFor | None,
              outcome: RunOutcome, events: Events) -> None: ...


# --- a task's settings ----------------------------------------------------------------------


def task_config(task: Task, work_dir: Path | None, threads: int | None = None) -> TrainConfig:
    """The engine's settings for one task, checkpointing into (and resuming from) `work_dir`;
    `threads` overrides the experiment's thread count (Ray's --cpus-per-task)."""
    return TrainConfig(
        seed=task.seed, device=task.device, precision=task.precision, validate_on=task.protocol,  # type: ignore[arg-type]
        val_fraction=task.val_fraction, train_limit=task.train_limit, out_dir=work_dir, resume=True,
        max_params=task.max_params, max_activation_mib=task.max_activation_mib,
        patience=task.patience, threads=task.threads if threads is None else threads,
        deterministic=task.deterministic, flush_denormal=task.flush_denormal,
        split_seed=0 if task.split_seed is None else task.split_seed,
    )


def execute_task(
    task: Task,
    dataset: Dataset,
    work_dir: Path,
    reporter: Reporter | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> History:
    """Train one task, checkpointing into `work_dir` and resuming from it if present."""
    return fit(task.spec, dataset, task_config(task, work_dir), reporter=reporter, on_epoch=on_epoch)


def experiment_tasks(experiment: Experiment, source: str, dataset: Dataset | None) -> list[Task]:
    """Every task of the experiment, checked before the store is touched: a bad model or dataset
    must not leave pending runs behind."""
    tasks = expand(experiment, source)
    check_tasks(tasks, shape_of(dataset) if dataset is not None else dataset_shape(experiment.dataset),
                source, experiment.name)
    return tasks


def stored_runs(experiment: Experiment, store: RunStore, tasks: list[Task]) -> tuple[RunOutcome, Pending]:
    """Save the experiment, ensure a run per task; the outcome so far and the runs still to train."""
    store.save_experiment(experiment.name, experiment.to_dict())
    records = [
        store.ensure_run(
            t.experiment, t.model_id, t.run_config(), t.seed, t.dataset, t.protocol, t.spec.training.epochs
        )
        for t in tasks
    ]
    outcome = RunOutcome(run_ids=[r.id for r in records])
    pending = [(t, r) for t, r in zip(tasks, records) if store.get_run(r.id).status not in FINISHED_STATUSES]
    outcome.skipped_finished = [r.id for t, r in zip(tasks, records) if (t, r) not in pending]
    return outcome, pending


def claim_task(store: RunStore, task: Task, record: RunRecord, owner: str, source: str | None) -> bool:
    """Claim a run to train it (store.claim_run), recording in the same transaction what is about to
    produce it: the git state of the experiment file `source` and of the task's spec file, the
    installed distributions, the command, the libraries and the CPU (util.provenance). Every backend
    claims this way, so a run resumed elsewhere records where it was resumed."""
    return store.claim_run(record.id, owner, provenance=collect([source, task.spec.source], task.device))


# --- while a run trains ---------------------------------------------------------------------


def epoch_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics of an epoch that the store keeps (the engine hands over a few more)."""
    return {k: v for k, v in metrics.items() if k in EPOCH_METRICS}


def record_epoch(store: RunStore, record: RunRecord, task: Task, epoch: int, metrics: dict[str, float], owner: str,
                 events: Events = NO_LISTENERS) -> None:
    """Write one finished epoch of a run (owner-conditional), then tell the listeners."""
    kept = epoch_metrics(metrics)
    store.record_epoch(record.id, epoch, kept, owner=owner)
    events.emit(EpochEnded(record.id, task.model_id, task.seed, epoch, task.spec.training.epochs, kept))


def set_aside(work_dir: Path) -> Path:
    """Rename a damaged checkpoint folder to the first free ``checkpoint.damaged-N``."""
    number = 1
    while (target := work_dir.with_name(f"{work_dir.name}{DAMAGED_SUFFIX}{number}")).exists():
        number += 1
    os.replace(work_dir, target)
    return target


def restart(store: RunStore, record: RunRecord, work_dir: Path, error: BaseException, owner: str | None) -> None:
    """Set a run's damaged checkpoint aside (kept for inspection); the run starts over from epoch 1
    (only one checkpoint is kept, so there is none older to fall back on)."""
    aside = set_aside(work_dir)
    store.add_note(record.id, f"damaged checkpoint moved to {aside.name}; the run restarted from scratch: {error}")
    store.truncate_epochs(record.id, 0, owner=owner)


# --- when a run ends ------------------------------------------------------------------------


def final_metrics(task: Task, history: History, full_train_images: int) -> dict:
    reference = task.spec.reference or {}
    return {
        "test_loss": history.test_loss,
        "test_acc": history.test_acc,
        "diverged_epoch": history.diverged_epoch,
        "images_per_second": history.images_per_second,
        "params": resolve(task.spec).total_params,
        "description": task.spec.description,
        "reference_test_acc": reference.get("test_acc"),
        "reference_notebook": reference.get("notebook"),
        # Empty: the run followed the notebook's protocol, so its figure may be compared with the notebook's.
        "reference_differences": protocol_differences(task.spec, task.protocol, history.train_images, full_train_images),
        "factors": dict(task.factors) or None,  # a factor-grid variant's levels, for the report's effects
        "best_epoch": history.best_epoch,  # early stopping: the epoch whose weights were restored and tested
        "stopped_early": history.stopped_early if task.patience is not None else None,
        "threads": history.threads,  # intra-op CPU threads: part of what makes a run repeatable bit for bit
    }


def report_failed(reporter: Reporter | None, task: Task, record: RunRecord, error: str,
                  events: Events = NO_LISTENERS) -> None:
    """Tell a task's reporter and the listeners that its run failed (recording that in the store is
    the caller's job)."""
    end = RunEnd.failed(task.model_id, task.seed, error, record.id)
    if reporter is not None:
        reporter.end_run(end)
    events.emit(end)


def cannot_write(store: RunStore, record: RunRecord, task: Task, exc: BaseException, owner: str) -> EnvironmentFailure:
    """Fail the run on a write error (full disk, unwritable folder); the error to raise."""
    cause = exc.__cause__ if isinstance(exc, CheckpointWriteError) else exc
    reason = getattr(cause, "strerror", None) or str(cause)
    where = getattr(cause, "filename", None) or store.run_dir(record.id)
    store.fail_run(record.id, f"{reason} ({where})", owner=owner)
    return EnvironmentFailure(f"run {record.id} ({task.model_id}, seed {task.seed}): cannot write {where}: {reason}")


def finish_task(store: RunStore, record: RunRecord, task: Task, history: History, dataset: Dataset, owner: str,
                reporter: Reporter | None = None, *, versions: dict[str, str] | None = None,
                extra: dict | None = None, work_dir: Path | None = None, events: Events = NO_LISTENERS) -> None:
    """Record a trained task: model folder, the diverging epoch, final metrics and predictions; then
    remove its checkpoint and tell its reporter and the listeners that the run ended.

    `versions`: the packages and machine that trained it (None: this process's); `extra`: more final
    metrics (the Ray backend's worker and attempt); `work_dir`: its checkpoint folder (None: the
    run folder's)."""
    run_dir = store.run_dir(record.id)
    versions = versions if versions is not None else package_versions(history.device)
    try:
        save_trained(run_dir, history, dataset.info, versions)  # the run folder becomes a model folder (unless diverged)
    except OSError as exc:
        raise cannot_write(store, record, task, exc, owner) from None
    if history.status == DIVERGED:
        # The diverging epoch is not checkpointed; record it so the history shows the NaN.
        last = history.epochs[-1]
        store.record_epoch(record.id, int(last["epoch"]), epoch_metrics(last), owner=owner)
    labels = np.asarray(history.test_labels, dtype=np.uint8) if history.test_labels else None
    predicted = np.asarray(history.test_predictions, dtype=np.uint8) if history.test_predictions else None
    final = {**final_metrics(task, history, len(dataset.train_labels)), **(extra or {})}
    store.finish_run(record.id, history.status, final=final, labels=labels, predicted=predicted,
                     device=history.device, versions=versions, owner=owner)
    for note in history.notes:  # how its arithmetic was done where not the default (bf32, subnormals, CPU paths)
        store.add_note(record.id, note)
    shutil.rmtree(work_dir if work_dir is not None else run_dir / CHECKPOINT_DIR, ignore_errors=True)
    end = RunEnd.of(history, record.id)
    if reporter is not None:
        reporter.end_run(end)
    events.emit(end)


def guard_training(store: RunStore, claimed: Pending, reporter: Reporter | None, owner: str, outcome: RunOutcome,
                   train: Callable[[], None], events: Events = NO_LISTENERS) -> None:
    """Run `train` over claimed runs, recording a failure the one way every backend does.

    A bad input (MnistlabError) fails the runs not yet finished and propagates; so does a crash,
    which is also written to them. Ctrl-C leaves the claims to go stale, so a rerun resumes from the
    checkpoints. A store error propagates untouched (the store may be what failed)."""
    def unfinished() -> Pending:
        return [(task, record) for task, record in claimed if record.id not in outcome.trained + outcome.lost]

    try:
        train()
    except StoreError:
        raise
    except MnistlabError as exc:
        left = unfinished()
        outcome.failed += [record.id for _, record in left]
        for task, record in left:
            report_failed(reporter, task, record, str(exc), events)
        raise
    except BaseException as exc:
        if not isinstance(exc, KeyboardInterrupt):
            message = f"{type(exc).__name__}: {exc}"
            for task, record in unfinished():
                store.fail_run(record.id, message, owner=owner)
                report_failed(reporter, task, record, message, events)
        raise
