"""One way for features to listen to a study: the events the runner and every backend emit.

The runner and both backends (local, Ray) emit, in this order for each run:
- ``EpochEnded`` once per epoch, right after the epoch is written to the store;
- ``RunEnd`` (training/history.py: the record a reporter's ``end_run`` gets too) once when the run is
  recorded as completed, diverged or failed;
and the runner emits ``RoundEnded`` when a call of ``run_experiment`` has handed out all its work
(a study that adds seeds in rounds emits one per round).

A listener is any callable taking one event. Live reports, live TensorBoard/MLflow logging,
archives and until-decided rounds subscribe here, so the runner never imports report or interop
code. A listener that raises stops the study, like any other error in the coordinating process:
listeners should be quick and must not write to the store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Union

from mnistlab.training.history import RunEnd


@dataclass(frozen=True)
class EpochEnded:
    """An epoch of a run has ended and is in the store."""

    run_id: int
    model: str
    seed: int
    epoch: int
    epochs: int  # the run's epoch count
    metrics: Mapping[str, float]


@dataclass(frozen=True)
class RoundEnded:
    """A call of the runner has handed out all its work (some runs may be another process's)."""

    experiment: str
    run_ids: tuple[int, ...]
    trained: tuple[int, ...] = field(default=())
    failed: tuple[int, ...] = field(default=())


Event = Union[EpochEnded, RunEnd, RoundEnded]
Listener = Callable[[Event], None]


class Events:
    """The listeners of one study; ``emit`` hands each event to each listener, in order."""

    def __init__(self, listeners: Iterable[Listener] = ()) -> None:
        self.listeners: tuple[Listener, ...] = tuple(listeners)

    def emit(self, event: Event) -> None:
        for listener in self.listeners:
            listener(event)


NO_LISTENERS = Events()
