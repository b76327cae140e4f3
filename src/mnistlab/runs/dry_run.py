"""What `mnistlab run EXPERIMENT` would train, and how long it would take here: nothing is trained or written.

The tasks are expanded and checked as the runner does (runner.py); a task counts as done when the store
already holds a finished run of its identity (experiment, model, spec hash, seed, dataset, protocol: the
store's). The store is only read, and only if it exists: a dry run never creates one. Each pending
model (one configuration: tasks that differ only in their seed) is probed once with real training and
evaluation steps (training/cost.py, the one home of the probe and of the estimate), at its own
precision, batch size, threads and device, and each of its seeds costs one estimate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mnistlab.experiments.definition import Experiment, Task
from mnistlab.runs.local import unit_key
from mnistlab.runs.records import spec_hash
from mnistlab.runs.store import DB_NAME, RunStore, open_existing_store
from mnistlab.runs.tasks import experiment_tasks
from mnistlab.training.cost import (DEFAULT_PROBE_SECONDS, Estimate, check_probe_seconds, epoch_images, estimate_training,
                                    probe_throughput)
from mnistlab.training.history import FINISHED_STATUSES

__all__ = ["DryRun", "PlannedModel", "dry_run"]


@dataclass(frozen=True)
class PlannedModel:
    """One model (configuration) with seeds still to train, and one seed's estimate from its probe."""

    model_id: str
    seeds: tuple[int, ...]
    estimate: Estimate

    @property
    def seconds(self) -> float:
        return self.estimate.seconds * len(self.seeds)


@dataclass(frozen=True)
class DryRun:
    """What a run of the experiment would train (models × seeds not done yet) and its estimated time."""

    experiment: str
    planned: tuple[PlannedModel, ...]
    done: int  # tasks already finished in the store

    @property
    def runs(self) -> int:
        return sum(len(model.seeds) for model in self.planned)

    @property
    def seconds(self) -> float:
        return sum(model.seconds for model in self.planned)

    @property
    def hours(self) -> float:
        return self.seconds / 3600


def _identity(task: Task) -> tuple[str, str, int, str, str]:
    return task.model_id, spec_hash(task.run_config()), task.seed, task.dataset, task.protocol


def _finished(store: RunStore | Path | str | None, experiment: str) -> set[tuple[str, str, int, str, str]]:
    if store is None or (not isinstance(store, RunStore) and not (Path(store) / DB_NAME).is_file()):
        return set()  # no store yet: everything is still to train, and none is made to find that out
    if not isinstance(store, RunStore):
        with open_existing_store(store) as opened:
            return _finished(opened, experiment)
    return {(run.model_id, run.spec_hash, run.seed, run.dataset, run.protocol)
            for run in store.runs(experiment) if run.status in FINISHED_STATUSES}


def dry_run(experiment: Experiment, store: RunStore | Path | str | None, source: str = "<python>", *,
            probe_seconds: float | None = None) -> DryRun:
    """The tasks of `experiment` that `store` has not finished, each model probed `probe_seconds` (default
    cost.DEFAULT_PROBE_SECONDS) here (the
    experiment's dataset must be a registered one: its image counts are known without loading it)."""
    probe_seconds = DEFAULT_PROBE_SECONDS if probe_seconds is None else probe_seconds
    check_probe_seconds(probe_seconds, f"{source}: experiment '{experiment.name}'")  # before any work
    tasks = experiment_tasks(experiment, source, None)
    finished = _finished(store, experiment.name)
    pending = [task for task in tasks if _identity(task) not in finished]
    groups: dict[str, list[Task]] = {}
    for task in pending:
        groups.setdefault(unit_key(task), []).append(task)
    planned = []
    for group in groups.values():
        task = group[0]
        throughput = probe_throughput(task.spec, precision=task.precision, seconds=probe_seconds,
                                      threads=task.threads, device=task.device)
        train, val, test = epoch_images(task.dataset, task.protocol, task.val_fraction, task.train_limit)
        cost = estimate_training(throughput, epochs=task.spec.training.epochs, train_images=train, val_images=val,
                                 test_images=test)
        planned.append(PlannedModel(task.model_id, tuple(t.seed for t in group), cost))
    return DryRun(experiment.name, tuple(planned), len(tasks) - len(pending))
