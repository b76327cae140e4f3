"""The local runner's seed bundles: pending tasks grouped into units trained by `fit_bundle`.

A unit is the pending (model, seed) tasks of one model and configuration (everything but the
seed), at most K of them. Every run of a unit is claimed and kept fresh by its own heartbeat
while the unit trains; each seed's epochs go to its own run as they end, and each run is finished
as a single run would be. A seed's damaged checkpoint is set aside and only that seed restarts;
a run whose claim is lost leaves the unit and the others go on from their checkpoints.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Literal

from mnistlab.training.bundle import bundle_capacity, fit_bundle
from mnistlab.training.checkpoint import read_checkpoint_info
from mnistlab.data.datasets import Dataset
from mnistlab.training.engine import History, Reporter
from mnistlab.errors import CheckpointError, CheckpointWriteError, LeaseLost, MnistlabError, StoreError
from mnistlab.experiments.definition import Task
from mnistlab.runs.lease import Heartbeat
from mnistlab.runs.store import RunRecord, RunStore
from mnistlab.util.strict import whole_number

__all__ = ["execute_unit", "group_units", "parse_bundle", "run_units", "unit_key"]

Bundle = int | Literal["auto"]
Pending = list[tuple[Task, RunRecord]]


def parse_bundle(value: Any) -> Bundle:
    """`--bundle K|auto`: a whole number >= 1 or 'auto'; anything else is a one-line error."""
    if value == "auto":
        return "auto"
    text = str(value).strip()
    number = value if isinstance(value, int) and not isinstance(value, bool) else whole_number(text)
    if number is None or number < 1:
        raise MnistlabError(f"--bundle {value!r}: give the number of seeds to train together (1 or more) or 'auto'")
    return number


def unit_key(task: Task) -> str:
    """Everything about a task but its seed: tasks with equal keys can share a bundle."""
    fields = {**task.run_config(), "experiment": task.experiment, "dataset": task.dataset,
              "protocol": task.protocol, "device": task.device, "max_params": task.max_params,
              "max_activation_mib": task.max_activation_mib, "patience": task.patience, "threads": task.threads,
              "factors": list(task.factors)}
    return json.dumps(fields, sort_keys=True, default=str)


def group_units(pending: Pending, bundle: Bundle, dataset: Dataset) -> list[Pending]:
    """Pending tasks → units of at most `bundle` tasks of one model and configuration, in order."""
    from mnistlab.runs.runner import task_config

    groups: dict[str, Pending] = {}
    for task, record in pending:
        groups.setdefault(unit_key(task), []).append((task, record))
    units: list[Pending] = []
    for group in groups.values():
        size = bundle if bundle != "auto" else bundle_capacity(group[0][0].spec, dataset, task_config(group[0][0], None))
        units += [group[start : start + size] for start in range(0, len(group), size)]
    return units


def execute_unit(tasks: list[Task], dataset: Dataset, work_dirs: list[Path], reporter: Reporter | None = None,
                 on_epoch: Callable[[int, int, dict[str, float]], None] | None = None) -> list[History]:
    """Train the tasks of one unit as a bundle, each checkpointing into (and resuming from) its folder."""
    from mnistlab.runs.runner import task_config

    configs = [task_config(task, work_dir) for task, work_dir in zip(tasks, work_dirs)]
    return fit_bundle(tasks[0].spec, dataset, configs, reporter=reporter, on_epoch=on_epoch)


def run_units(store: RunStore, pending: Pending, dataset: Dataset, bundle: Bundle,
              reporter_for: Callable[[Task], Reporter] | None, owner: str, outcome: Any) -> None:
    """The runner's loop over units (`outcome` is its RunOutcome, filled in here)."""
    from mnistlab.runs.runner import _train_one, report_failed

    for unit in group_units(pending, bundle, dataset):
        claimed: Pending = []
        for task, record in unit:
            if store.claim_run(record.id, owner):
                claimed.append((task, record))
            else:
                outcome.skipped_claimed.append(record.id)
        if not claimed:
            continue
        reporter = reporter_for(claimed[0][0]) if reporter_for else None
        try:
            if len(claimed) == 1:
                try:
                    _train_one(store, claimed[0][1], claimed[0][0], dataset, reporter, owner)
                except LeaseLost:
                    outcome.lost.append(claimed[0][1].id)
                    continue
                outcome.trained.append(claimed[0][1].id)
            else:
                _train_unit(store, claimed, dataset, reporter, owner, outcome)
        except StoreError:
            raise
        except MnistlabError as exc:
            unfinished = [(task, record) for task, record in claimed if record.id not in outcome.trained + outcome.lost]
            outcome.failed += [record.id for _, record in unfinished]
            for task, record in unfinished:
                report_failed(reporter, task, record, str(exc))
            raise
        except BaseException as exc:
            # Ctrl-C or a crash: leave the claims to go stale so a rerun resumes from the checkpoints.
            if not isinstance(exc, KeyboardInterrupt):
                message = f"{type(exc).__name__}: {exc}"
                for task, record in claimed:
                    if record.id not in outcome.trained + outcome.lost:
                        store.fail_run(record.id, message, owner=owner)
                        report_failed(reporter, task, record, message)
            raise


def _train_unit(store: RunStore, unit: Pending, dataset: Dataset, reporter: Reporter | None, owner: str,
                outcome: Any) -> None:
    from mnistlab.runs.runner import CHECKPOINT_DIR, _epoch_metrics, cannot_write, finish_task

    with ExitStack() as stack:
        beats = {record.id: stack.enter_context(Heartbeat(store.root, record.id, owner, store.heartbeat_seconds))
                 for _, record in unit}
        active = list(unit)
        while active:
            work_dirs = [store.run_dir(record.id) / CHECKPOINT_DIR for _, record in active]

            def on_epoch(index: int, epoch: int, metrics: dict[str, float], active: Pending = active) -> None:
                record = active[index][1]
                beats[record.id].check()
                store.record_epoch(record.id, epoch, _epoch_metrics(metrics), owner=owner)

            try:
                for (_, record), work_dir in zip(active, work_dirs):
                    info = _checkpoint_or_set_aside(store, record, work_dir, owner)
                    # Epochs stored after the last checkpoint are replayed identically; drop them first.
                    store.truncate_epochs(record.id, info["epoch"] if info else 0, owner=owner)
                histories = execute_unit([task for task, _ in active], dataset, work_dirs, reporter, on_epoch)
            except CheckpointError as error:
                where = getattr(error, "out_dir", None)
                if where not in work_dirs:
                    raise
                record = active[work_dirs.index(where)][1]
                _restart(store, record, Path(where), error, owner)
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
                finish_task(store, record, task, history, dataset, owner, reporter)
                outcome.trained.append(record.id)
            return


def _checkpoint_or_set_aside(store: RunStore, record: RunRecord, work_dir: Path, owner: str) -> dict[str, Any] | None:
    try:
        return read_checkpoint_info(work_dir)
    except CheckpointError as error:
        _restart(store, record, work_dir, error, owner)
        return None


def _restart(store: RunStore, record: RunRecord, work_dir: Path, error: CheckpointError, owner: str | None) -> None:
    """Set a seed's damaged checkpoint aside (kept for inspection); that seed starts over."""
    from mnistlab.runs.runner import set_aside

    aside = set_aside(work_dir)
    store.add_note(record.id, f"damaged checkpoint moved to {aside.name}; the run restarted from scratch: {error}")
    store.truncate_epochs(record.id, 0, owner=owner)
