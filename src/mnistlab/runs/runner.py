"""Experiment → tasks → engine → store, on a local backend.

The coordinating process owns the store: it claims a task, trains it (`execute_task` needs
nothing but the task, the data and a folder, so a distributed backend can run it elsewhere),
and records each epoch as it ends. Claims make two `mnistlab run` processes on one store
share the work instead of doing it twice; a run whose owner died is claimed again and resumes
from its last checkpoint.

While a run trains, a heartbeat thread keeps its claim fresh (lease.py), and every write of its
epochs and results names its owner: a process whose claim went stale and was taken over has its
writes refused (LeaseLost) and leaves the run to its new owner. A damaged checkpoint is moved
aside (kept for inspection) and the run restarts from scratch, with the reason noted on the run.
"""

from __future__ import annotations

import os
import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mnistlab.training.checkpoint import read_checkpoint_info
from mnistlab.data.datasets import Dataset, load_dataset
from mnistlab.training.engine import History, Reporter, RunEnd, TrainConfig, fit, resolve_device
from mnistlab.errors import CheckpointError, CheckpointWriteError, EnvironmentFailure, LeaseLost, MnistlabError, StoreError
from mnistlab.experiments.definition import Experiment, Task, expand
from mnistlab.trained.folder import save_trained
from mnistlab.runs.lease import Heartbeat
from mnistlab.util.machine import describe
from mnistlab.training.limits import check_tasks, dataset_shape, shape_of
from mnistlab.util.netcheck import check_ray_address
from mnistlab.experiments.reference import protocol_differences
from mnistlab.spec.model import resolve
from mnistlab.runs.store import EPOCH_METRICS, FINISHED_STATUSES, PENDING, RUNNING, RunRecord, RunStore, current_owner

CHECKPOINT_DIR = "checkpoint"
DAMAGED_SUFFIX = ".damaged-"  # checkpoint.damaged-1, -2, ...: set aside, kept for inspection


@dataclass
class RunOutcome:
    """What one `run_experiment` call did."""

    trained: list[int] = field(default_factory=list)
    skipped_finished: list[int] = field(default_factory=list)
    skipped_claimed: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)  # claims that went stale and were taken over
    run_ids: list[int] = field(default_factory=list)  # every run of the experiment as given


def experiment_settled(store: RunStore, run_ids: list[int]) -> bool:
    """True when no run of ``run_ids`` is pending or running, so a report covers them all.

    Each process asks this after its own last write: of two processes finishing at once, the
    one whose write committed last sees the other's, so at least one of them writes the report.
    """
    return all(store.get_run(run_id).status not in (PENDING, RUNNING) for run_id in run_ids)


def package_versions(device: str = "cpu") -> dict[str, str]:
    """The software a run used, and the machine (``machine``: the processor that ``device`` names)."""
    from mnistlab import __version__

    return {"mnistlab": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "machine": describe(device)}


def execute_task(
    task: Task,
    dataset: Dataset,
    work_dir: Path,
    reporter: Reporter | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> History:
    """Train one task, checkpointing into `work_dir` and resuming from it if present."""
    return fit(task.spec, dataset, task_config(task, work_dir), reporter=reporter, on_epoch=on_epoch)


def task_config(task: Task, work_dir: Path | None, threads: int | None = None) -> TrainConfig:
    """The engine's settings for one task, checkpointing into (and resuming from) `work_dir`;
    `threads` overrides the experiment's thread count (Ray's --cpus-per-task)."""
    return TrainConfig(
        seed=task.seed, device=task.device, precision=task.precision, validate_on=task.protocol,  # type: ignore[arg-type]
        val_fraction=task.val_fraction, train_limit=task.train_limit, out_dir=work_dir, resume=True,
        max_params=task.max_params, max_activation_mib=task.max_activation_mib,
        patience=task.patience, threads=task.threads if threads is None else threads,
        deterministic=task.deterministic,
    )


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


def _epoch_metrics(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k in EPOCH_METRICS}


class _Recorder:
    """Writes each finished epoch to the store as it ends (so a crash loses at most one)."""

    def __init__(self, store: RunStore, run_id: int, owner: str, heartbeat: Heartbeat) -> None:
        self.store = store
        self.run_id = run_id
        self.owner = owner
        self.heartbeat = heartbeat

    def __call__(self, epoch: int, metrics: dict[str, float]) -> None:
        self.heartbeat.check()
        self.store.record_epoch(self.run_id, epoch, _epoch_metrics(metrics), owner=self.owner)


def set_aside(work_dir: Path) -> Path:
    """Rename a damaged checkpoint folder to the first free ``checkpoint.damaged-N``."""
    number = 1
    while (target := work_dir.with_name(f"{work_dir.name}{DAMAGED_SUFFIX}{number}")).exists():
        number += 1
    os.replace(work_dir, target)
    return target


def _train_with_checkpoints(store: RunStore, record: RunRecord, task: Task, dataset: Dataset,
                            reporter: Reporter | None, owner: str, heartbeat: Heartbeat) -> History:
    """Train from the last checkpoint; a damaged one is set aside and the run starts over
    (only one checkpoint is kept, so there is none older to fall back on)."""
    work_dir = store.run_dir(record.id) / CHECKPOINT_DIR
    recorder = _Recorder(store, record.id, owner, heartbeat)
    try:
        info = read_checkpoint_info(work_dir)
        # Epochs stored after the last checkpoint are replayed identically; drop them first.
        store.truncate_epochs(record.id, info["epoch"] if info else 0, owner=owner)
        return execute_task(task, dataset, work_dir, reporter, on_epoch=recorder)
    except CheckpointError as error:
        aside = set_aside(work_dir)
        store.add_note(record.id, f"damaged checkpoint moved to {aside.name}; the run restarted from scratch: {error}")
    store.truncate_epochs(record.id, 0, owner=owner)
    return execute_task(task, dataset, work_dir, reporter, on_epoch=recorder)


def _train_one(store: RunStore, record: RunRecord, task: Task, dataset: Dataset, reporter: Reporter | None,
               owner: str | None = None) -> None:
    owner = owner or current_owner()
    with Heartbeat(store.root, record.id, owner, store.heartbeat_seconds) as heartbeat:
        try:
            history = _train_with_checkpoints(store, record, task, dataset, reporter, owner, heartbeat)
        except (OSError, CheckpointWriteError) as exc:
            raise cannot_write(store, record, task, exc, owner) from None
        finish_task(store, record, task, history, dataset, owner, reporter)


def report_failed(reporter: Reporter | None, task: Task, record: RunRecord, error: str) -> None:
    """Tell a task's reporter that its run failed (recording that in the store is the caller's job)."""
    if reporter is not None:
        reporter.end_run(RunEnd.failed(task.model_id, task.seed, error, record.id))


def cannot_write(store: RunStore, record: RunRecord, task: Task, exc: BaseException, owner: str) -> EnvironmentFailure:
    """Fail the run on a write error (full disk, unwritable folder); the error to raise."""
    cause = exc.__cause__ if isinstance(exc, CheckpointWriteError) else exc
    reason = getattr(cause, "strerror", None) or str(cause)
    where = getattr(cause, "filename", None) or store.run_dir(record.id)
    store.fail_run(record.id, f"{reason} ({where})", owner=owner)
    return EnvironmentFailure(f"run {record.id} ({task.model_id}, seed {task.seed}): cannot write {where}: {reason}")


def finish_task(store: RunStore, record: RunRecord, task: Task, history: History, dataset: Dataset, owner: str,
                reporter: Reporter | None = None) -> None:
    """Record a trained task: model folder, the diverging epoch, final metrics and predictions;
    then tell its reporter the run ended."""
    run_dir = store.run_dir(record.id)
    work_dir = run_dir / CHECKPOINT_DIR
    try:
        save_trained(run_dir, history, dataset.info)  # the run folder becomes a model folder (unless diverged)
    except OSError as exc:
        raise cannot_write(store, record, task, exc, owner) from None
    if history.status == "diverged":
        # The diverging epoch is not checkpointed; record it so the history shows the NaN.
        last = history.epochs[-1]
        store.record_epoch(record.id, int(last["epoch"]), _epoch_metrics(last), owner=owner)
    labels = np.asarray(history.test_labels, dtype=np.uint8) if history.test_labels else None
    predicted = np.asarray(history.test_predictions, dtype=np.uint8) if history.test_predictions else None
    store.finish_run(
        record.id, history.status, final=final_metrics(task, history, len(dataset.train_labels)), labels=labels, predicted=predicted,
        device=history.device, versions=package_versions(history.device), owner=owner,
    )
    shutil.rmtree(work_dir, ignore_errors=True)  # the optimizer state is no longer needed
    if reporter is not None:
        reporter.end_run(RunEnd.of(history, record.id))


BACKENDS = ("local", "ray")


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


def experiment_tasks(experiment: Experiment, source: str, dataset: Dataset | None) -> list[Task]:
    """Every task of the experiment, checked before the store is touched: a bad model or dataset
    must not leave pending runs behind."""
    tasks = expand(experiment, source)
    check_tasks(tasks, shape_of(dataset) if dataset is not None else dataset_shape(experiment.dataset),
                source, experiment.name)
    return tasks


def stored_runs(experiment: Experiment, store: RunStore,
                tasks: list[Task]) -> tuple[RunOutcome, list[tuple[Task, RunRecord]]]:
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


def run_experiment(
    experiment: Experiment,
    store: RunStore,
    source: str = "<python>",
    data_dir: Path | str | None = None,
    download: bool = False,
    reporter_for: Callable[[Task], Reporter] | None = None,
    dataset: Dataset | None = None,
    bundle: int | str = 1,
    placement: Placement | None = None,
) -> RunOutcome:
    """Train every (model, seed) of `experiment` not already finished; resume interrupted ones.

    `bundle`: train up to this many seeds of one model and configuration as one seed bundle
    ("auto": as many as fit in memory; 1: one run at a time). `placement`: this process (the
    default) or a Ray cluster (`Placement(backend="ray", ...)`; a unit of work is a
    bundle there too; see mnistlab.runs.ray.coordinator)."""
    from mnistlab.runs.local import parse_bundle, run_units

    bundle = parse_bundle(bundle)
    placement = placement or Placement()
    placement.check()
    if placement.backend == "ray":
        from mnistlab.runs.ray.coordinator import run_on_ray

        return run_on_ray(experiment, store, placement, source, data_dir, download, reporter_for, dataset, bundle)
    tasks = experiment_tasks(experiment, source, dataset)
    try:  # the device is this (local) backend's to check
        resolve_device(experiment.defaults.device)
    except MnistlabError as exc:
        raise MnistlabError(f"{source}: experiment '{experiment.name}': field 'defaults.device': {exc}") from None
    outcome, pending = stored_runs(experiment, store, tasks)
    if not pending:
        return outcome
    data = dataset or load_dataset(experiment.dataset, data_dir=data_dir, download=download)
    owner = current_owner()
    if bundle != 1:
        run_units(store, pending, data, bundle, reporter_for, owner, outcome)
        return outcome
    for task, record in pending:
        if not store.claim_run(record.id, owner):
            outcome.skipped_claimed.append(record.id)
            continue
        reporter = reporter_for(task) if reporter_for else None
        try:
            _train_one(store, record, task, data, reporter, owner)
        except LeaseLost:
            # Our claim went stale (say the machine slept) and another process took the run
            # over; it continues from the checkpoint, we move on.
            outcome.lost.append(record.id)
            continue
        except StoreError:
            raise
        except MnistlabError as exc:
            outcome.failed.append(record.id)
            report_failed(reporter, task, record, str(exc))
            raise
        except BaseException as exc:
            # Ctrl-C or a crash: leave the claim to go stale so a rerun resumes from the checkpoint.
            if not isinstance(exc, KeyboardInterrupt):
                message = f"{type(exc).__name__}: {exc}"
                store.fail_run(record.id, message, owner=owner)
                report_failed(reporter, task, record, message)
            raise
        outcome.trained.append(record.id)
    return outcome
