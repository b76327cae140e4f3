"""Experiment → tasks → backend → store.

The runner expands an experiment into tasks (checked before the store is touched), stores a run
per task, and hands the runs still to train to a backend: this process (local.py) or a Ray cluster
(ray/). Claims make two `mnistlab run` processes on one store share the work instead of doing it
twice; a run whose owner died is claimed again and resumes from its last checkpoint.

While a run trains, a heartbeat thread keeps its claim fresh (lease.py), and every write of its
epochs and results names its owner: a process whose claim went stale and was taken over has its
writes refused (LeaseLost) and leaves the run to its new owner. A damaged checkpoint is moved
aside (kept for inspection) and the run restarts from scratch, with the reason noted on the run.
What every backend shares is in tasks.py; what a study emits as it goes is in events.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from mnistlab.data.datasets import Dataset, load_dataset
from mnistlab.experiments.definition import Experiment
from mnistlab.runs.events import Events, Listener, RoundEnded
from mnistlab.runs.local import LocalBackend, parse_bundle
from mnistlab.runs.store import RunStore
from mnistlab.runs.tasks import Backend, Placement, ReporterFor, RunOutcome, experiment_tasks, stored_runs
from mnistlab.training.history import PENDING, RUNNING
from mnistlab.util.provenance import forget as forget_provenance

__all__ = ["backend_for", "experiment_settled", "run_experiment"]


def experiment_settled(store: RunStore, run_ids: list[int]) -> bool:
    """True when no run of ``run_ids`` is pending or running, so a report covers them all.

    Each process asks this after its own last write: of two processes finishing at once, the
    one whose write committed last sees the other's, so at least one of them writes the report.
    """
    return all(store.get_run(run_id).status not in (PENDING, RUNNING) for run_id in run_ids)


def backend_for(placement: Placement, bundle: int | str = 1) -> Backend:
    """The backend a placement names (checked first); `bundle` as run_experiment's."""
    placement.check()
    units = parse_bundle(bundle)
    if placement.backend == "ray":
        from mnistlab.runs.ray.coordinator import RayBackend  # Ray only when asked for: it is an extra

        return RayBackend(placement, units)
    return LocalBackend(units)


def run_experiment(
    experiment: Experiment,
    store: RunStore,
    source: str = "<python>",
    data_dir: Path | str | None = None,
    download: bool = False,
    reporter_for: ReporterFor | None = None,
    dataset: Dataset | None = None,
    bundle: int | str = 1,
    placement: Placement | None = None,
    listeners: Iterable[Listener] = (),
) -> RunOutcome:
    """Train every (model, seed) of `experiment` not already finished; resume interrupted ones.

    `bundle`: train up to this many seeds of one model and configuration as one seed bundle
    ("auto": the size a short probe finds fastest, never slower than one at a time: local.auto_bundle; 1: one
    run at a time). `placement`: this process (the
    default) or a Ray cluster (`Placement(backend="ray", ...)`; a unit of work is a bundle there
    too; see mnistlab.runs.ray.coordinator). `listeners`: callables that receive the study's events
    (events.py) as they happen."""
    backend = backend_for(placement or Placement(), bundle)
    events = Events(listeners)
    forget_provenance()  # git states and packages as they are now, not as a previous study in this process saw them
    backend.check(experiment, source)
    tasks = experiment_tasks(experiment, source, dataset)
    with backend.session(experiment, source):
        outcome, pending = stored_runs(experiment, store, tasks)
        if pending:
            data = dataset or load_dataset(experiment.dataset, data_dir=data_dir, download=download)
            backend.train(store, pending, data, reporter_for, outcome, events)
    events.emit(RoundEnded(experiment.name, tuple(outcome.run_ids), tuple(outcome.trained), tuple(outcome.failed)))
    return outcome
