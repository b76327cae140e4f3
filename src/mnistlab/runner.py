"""Experiment → tasks → engine → store, on a local backend.

The coordinating process owns the store: it claims a task, trains it (`execute_task` needs
nothing but the task, the data and a folder, so a distributed backend can run it elsewhere),
and records each epoch as it ends. Claims make two `mnistlab run` processes on one store
share the work instead of doing it twice; a run whose owner died is claimed again and resumes
from its last checkpoint.
"""

from __future__ import annotations

import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mnistlab.checkpoint import read_checkpoint_info
from mnistlab.data import Dataset, load_dataset
from mnistlab.engine import History, Reporter, TrainConfig, fit
from mnistlab.errors import MnistlabError, StoreError
from mnistlab.experiment import Experiment, Task, expand
from mnistlab.models_io import save_trained
from mnistlab.reference import protocol_differences
from mnistlab.spec import resolve
from mnistlab.store import EPOCH_METRICS, FINISHED_STATUSES, RunRecord, RunStore, current_owner

CHECKPOINT_DIR = "checkpoint"


@dataclass
class RunOutcome:
    """What one `run_experiment` call did."""

    trained: list[int] = field(default_factory=list)
    skipped_finished: list[int] = field(default_factory=list)
    skipped_claimed: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


def package_versions() -> dict[str, str]:
    from mnistlab import __version__

    return {"mnistlab": __version__, "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()}


def execute_task(
    task: Task,
    dataset: Dataset,
    work_dir: Path,
    reporter: Reporter | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> History:
    """Train one task, checkpointing into `work_dir` and resuming from it if present."""
    config = TrainConfig(
        seed=task.seed, device=task.device, precision=task.precision, validate_on=task.protocol,  # type: ignore[arg-type]
        val_fraction=task.val_fraction, train_limit=task.train_limit, out_dir=work_dir, resume=True,
        patience=task.patience,
    )
    return fit(task.spec, dataset, config, reporter=reporter, on_epoch=on_epoch)


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
    }


def _epoch_metrics(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k in EPOCH_METRICS}


class _Recorder:
    """Writes each finished epoch to the store as it ends (so a crash loses at most one)."""

    def __init__(self, store: RunStore, run_id: int) -> None:
        self.store = store
        self.run_id = run_id

    def __call__(self, epoch: int, metrics: dict[str, float]) -> None:
        self.store.record_epoch(self.run_id, epoch, _epoch_metrics(metrics))


def _train_one(store: RunStore, record: RunRecord, task: Task, dataset: Dataset, reporter: Reporter | None) -> None:
    run_dir = store.run_dir(record.id)
    work_dir = run_dir / CHECKPOINT_DIR
    info = read_checkpoint_info(work_dir)
    # Epochs stored after the last checkpoint are replayed identically; drop them first.
    store.truncate_epochs(record.id, int(info["epoch"]) if info else 0)
    try:
        history = execute_task(task, dataset, work_dir, reporter, on_epoch=_Recorder(store, record.id))
        save_trained(run_dir, history, dataset.info)  # the run folder becomes a model folder (unless diverged)
    except OSError as exc:
        store.fail_run(record.id, f"{exc.strerror or exc} ({getattr(exc, 'filename', '') or run_dir})")
        raise MnistlabError(f"run {record.id} ({task.model_id}, seed {task.seed}): cannot write {exc.filename or run_dir}: {exc.strerror or exc}") from None
    if history.status == "diverged":
        # The diverging epoch is not checkpointed; record it so the history shows the NaN.
        last = history.epochs[-1]
        store.record_epoch(record.id, int(last["epoch"]), _epoch_metrics(last))
    labels = np.asarray(history.test_labels, dtype=np.uint8) if history.test_labels else None
    predicted = np.asarray(history.test_predictions, dtype=np.uint8) if history.test_predictions else None
    store.finish_run(
        record.id, history.status, final=final_metrics(task, history, len(dataset.train_labels)), labels=labels, predicted=predicted,
        device=history.device, versions=package_versions(),
    )
    shutil.rmtree(work_dir, ignore_errors=True)  # the optimizer state is no longer needed


def run_experiment(
    experiment: Experiment,
    store: RunStore,
    source: str = "<python>",
    data_dir: Path | str | None = None,
    download: bool = False,
    reporter_for: Callable[[Task], Reporter] | None = None,
    dataset: Dataset | None = None,
) -> RunOutcome:
    """Train every (model, seed) of `experiment` not already finished; resume interrupted ones."""
    tasks = expand(experiment, source)
    store.save_experiment(experiment.name, experiment.to_dict())
    records = [
        store.ensure_run(
            t.experiment, t.model_id, t.run_config(), t.seed, t.dataset, t.protocol, t.spec.training.epochs
        )
        for t in tasks
    ]
    outcome = RunOutcome()
    pending = [(t, r) for t, r in zip(tasks, records) if store.get_run(r.id).status not in FINISHED_STATUSES]
    outcome.skipped_finished = [r.id for t, r in zip(tasks, records) if (t, r) not in pending]
    if not pending:
        return outcome
    data = dataset or load_dataset(experiment.dataset, data_dir=data_dir, download=download)
    owner = current_owner()
    for task, record in pending:
        if not store.claim_run(record.id, owner):
            outcome.skipped_claimed.append(record.id)
            continue
        try:
            _train_one(store, record, task, data, reporter_for(task) if reporter_for else None)
        except StoreError:
            raise
        except MnistlabError:
            outcome.failed.append(record.id)
            raise
        except BaseException as exc:
            # Ctrl-C or a crash: leave the claim to go stale so a rerun resumes from the checkpoint.
            if not isinstance(exc, KeyboardInterrupt):
                store.fail_run(record.id, f"{type(exc).__name__}: {exc}")
            raise
        outcome.trained.append(record.id)
    return outcome
