"""What a Ray worker does with one unit of work: train its tasks, stream each epoch back, return results.

The worker never touches the run store (the coordinator is its only writer). It reports through an
event sink (an actor the coordinator drains): ``start`` when an attempt knows where it resumes,
``epoch`` as each epoch ends (before that epoch's checkpoint is written, as on the local backend),
``note`` for what the run's notes should say. Its return value carries each run's History and final
weights, so the store's machine needs no access to the workers' disks.

Attempts are fenced by folder: every attempt of a run (a Ray retry after a worker died, or the task
resubmitted by a restarted coordinator) creates its own ``attempt-N`` folder under the run's
checkpoint folder with an atomic ``mkdir``, copies the newest complete checkpoint of the earlier
attempts into it and resumes from there, and writes only there. An attempt that is still running
somewhere (a worker Ray gave up on) therefore never writes a checkpoint its successor reads or
writes. Without storage shared by all workers, a retried task on another machine finds no earlier
attempt and starts again from epoch 1.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from mnistlab.training.checkpoint import POINTER, read_checkpoint_info, tensor_file
from mnistlab.data.datasets import Dataset
from mnistlab.training.history import COMPLETED, History
from mnistlab.training.config import TrainConfig
from mnistlab.training.engine import fit
from mnistlab.errors import CheckpointError, EnvironmentFailure
from mnistlab.experiments.definition import Task
from mnistlab.runs.tasks import CHECKPOINT_DIR, set_aside, task_config
from mnistlab.util.machine import package_versions

ATTEMPT_PREFIX = "attempt-"
ATTEMPT_NAME = re.compile(r"^attempt-(\d+)")  # attempt-3, and attempt-3.damaged-1 set aside
ATTEMPT_FOLDER = re.compile(r"attempt-\d+")  # only live attempts hold checkpoints to resume from
COPY_TRIES = 3  # a live predecessor may replace its checkpoint while we copy it: read again


@dataclass(frozen=True)
class WorkItem:
    """One run of a unit: the task and where its checkpoints live (shared storage, or this machine)."""

    run_id: int
    task: Task
    checkpoints: Path  # <artifacts>/<run id>/checkpoint; attempts are folders inside


@dataclass
class RunResult:
    """One run's outcome as the worker saw it; ``weights`` is the trained state (None if diverged)."""

    run_id: int
    attempt: int
    resumed_from: int
    worker: str  # host:pid
    history: History  # without its model (the weights travel as tensors)
    weights: dict[str, torch.Tensor] | None
    versions: dict[str, str]


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def attempt_number(name: str) -> int | None:
    match = ATTEMPT_NAME.match(name)
    return int(match.group(1)) if match else None


def new_attempt(checkpoints: Path) -> tuple[int, Path]:
    """Create this attempt's own folder: the first free ``attempt-N`` after every existing one."""
    try:
        checkpoints.mkdir(parents=True, exist_ok=True)
        while True:
            taken = [n for entry in checkpoints.iterdir() if (n := attempt_number(entry.name)) is not None]
            number = max(taken, default=0) + 1
            folder = checkpoints / f"{ATTEMPT_PREFIX}{number}"
            try:
                folder.mkdir()  # atomic: of two attempts racing for a number, one gets it
                return number, folder
            except FileExistsError:
                continue
    except OSError as error:
        raise EnvironmentFailure(f"{checkpoints}: cannot create a checkpoint folder: "
                                 f"{error.strerror or error}") from None


def earlier_checkpoints(checkpoints: Path, own: Path) -> list[tuple[int, Path]]:
    """(epoch, folder) of every readable checkpoint of earlier attempts, newest epoch first. The
    folder itself counts too: the local backend checkpoints there directly."""
    found = []
    candidates = [checkpoints] + sorted(path for path in checkpoints.iterdir()
                                        if path != own and path.is_dir() and ATTEMPT_FOLDER.fullmatch(path.name))
    for folder in candidates:
        try:
            info = read_checkpoint_info(folder)
        except CheckpointError:
            continue  # damaged: the attempt that reads it sets it aside; here, just not a candidate
        if info is not None:
            found.append((int(info["epoch"]), folder))
    return sorted(found, key=lambda item: -item[0])


def _copy_checkpoint(source: Path, target: Path) -> int | None:
    """Copy the committed checkpoint of ``source`` into the empty ``target`` (the JSON last: it
    commits); its epoch, or None when ``source`` changed under us."""
    info = read_checkpoint_info(source)
    if info is None:
        return None
    epoch = int(info["epoch"])
    try:
        for path in source.iterdir():
            if path.is_file() and path.name != POINTER and not path.name.startswith("."):
                if path.name.startswith("epoch-") and path.name != tensor_file(epoch):
                    continue
                shutil.copyfile(path, target / path.name)
        shutil.copyfile(source / POINTER, target / POINTER)
    except FileNotFoundError:
        return None
    copied = read_checkpoint_info(target)
    if copied is None or int(copied["epoch"]) != epoch or not (target / tensor_file(epoch)).is_file():
        return None
    return epoch


def prepare_attempt(item: WorkItem) -> tuple[int, Path, int, list[dict[str, float]], str | None]:
    """This attempt's number and folder, the epoch it resumes after (0: from scratch), the history so
    far, and a note when an earlier attempt's checkpoint could not be used."""
    number, own = new_attempt(item.checkpoints)
    note = None
    for epoch, source in earlier_checkpoints(item.checkpoints, own):
        for _ in range(COPY_TRIES):
            try:
                copied = _copy_checkpoint(source, own)
            except CheckpointError:
                copied = None
            if copied is not None:
                info = read_checkpoint_info(own)
                return number, own, copied, list(info["history"]) if info else [], None
            for leftover in own.iterdir():  # start the next try from an empty folder
                leftover.unlink(missing_ok=True)
        note = f"the checkpoint of {source.name} (epoch {epoch}) could not be copied"
    return number, own, 0, [], note


class _Emitter:
    """Sends events to the coordinator's sink and waits until each is received, so an epoch is
    with the coordinator before its checkpoint is written."""

    def __init__(self, ray: Any, sink: Any) -> None:
        self.ray, self.sink = ray, sink

    def __call__(self, *event: Any) -> None:
        self.ray.get(self.sink.put.remote(event))


def train_unit(items: list[WorkItem], dataset: Dataset, sink: Any, threads: int | None) -> list[RunResult]:
    """The Ray task: train a unit (one run, or several seeds of one model as a seed bundle) and
    return each run's result. ``threads``: torch threads (--cpus-per-task); None: what the local
    backend would use (the experiment's, a resumed checkpoint's, else one per usable core), set
    explicitly by the engine since Ray starts workers with OMP_NUM_THREADS=1."""
    from mnistlab.runs.ray.env import import_ray

    emit = _Emitter(import_ray(loopback=False), sink)
    worker = worker_name()
    attempts: list[tuple[int, int]] = []  # (attempt number, epoch resumed after) per item
    configs = []
    for item in items:
        number, folder, resumed, history, note = prepare_attempt(item)
        emit("start", item.run_id, number, worker, resumed, history)
        if note:
            emit("note", item.run_id, number, note)
        attempts.append((number, resumed))
        configs.append(task_config(item.task, folder, threads=threads))

    def on_epoch(index: int, epoch: int, metrics: dict[str, float]) -> None:
        emit("epoch", items[index].run_id, attempts[index][0], epoch, metrics)

    for _ in range(len(items) + 1):  # each damaged checkpoint is set aside once
        try:
            histories = _fit(items, dataset, configs, on_epoch)
            break
        except CheckpointError as error:
            # A copied checkpoint does not fit its run (damaged, or of another run): keep it aside,
            # start that run over in a fresh folder of this attempt, as the local backend does.
            index = next((i for i, c in enumerate(configs) if c.out_dir == getattr(error, "out_dir", None)), 0)
            folder = configs[index].out_dir
            aside = set_aside(folder)
            number = attempts[index][0]
            emit("note", items[index].run_id, number,
                 f"damaged checkpoint moved to {aside.name}; the run restarted from scratch: {error}")
            folder.mkdir()
            attempts[index] = (number, 0)
            emit("start", items[index].run_id, number, worker, 0, [])
    else:
        raise EnvironmentFailure("checkpoints kept proving damaged; giving up on this unit")
    results = []
    for item, (number, resumed), trained in zip(items, attempts, histories):
        weights = None
        if trained.status == COMPLETED and trained.model is not None:
            weights = {key: value.detach().cpu() for key, value in trained.model.state_dict().items()}
        results.append(RunResult(item.run_id, number, resumed, worker, replace(trained, model=None), weights,
                                 package_versions(trained.device)))  # this machine's
    return results


def _fit(items: list[WorkItem], dataset: Dataset, configs: list[TrainConfig],
         on_epoch: Callable[[int, int, dict[str, float]], None]) -> list[History]:
    """One run with engine.fit, several as one seed bundle (bundle.fit_bundle)."""
    if len(items) == 1:
        return [fit(items[0].task.spec, dataset, configs[0], on_epoch=lambda epoch, metrics: on_epoch(0, epoch, metrics))]
    from mnistlab.training.bundle import fit_bundle

    return fit_bundle(items[0].task.spec, dataset, configs, on_epoch=on_epoch)


def checkpoint_root(artifacts: Path, run_id: int) -> Path:
    """Where a run's attempts checkpoint: ``<artifacts>/<run id>/checkpoint``, the same folder the
    local backend uses when ``artifacts`` is the store's artifacts folder."""
    return artifacts / str(run_id) / CHECKPOINT_DIR
