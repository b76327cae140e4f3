"""Training progress for its destination: the one home of the reporters and of the factory that picks one.

`make_reporter(console, log_format, quiet, label, model, seed)` chooses:

- `log_format="json"`: `JsonLinesReporter`, one JSON object per line on stderr (even with
  `quiet`: JSON is an explicit request for machine logs, and stdout keeps what it carries);
- `quiet`: the silent `engine.Reporter`;
- a terminal: `RichReporter`, a progress bar per epoch and a Keras-like line when it ends;
- anything else (a pipe, a log file, CI): `LineReporter`, that line alone, never wrapped, flushed.

Each is an `engine.Reporter` and can be built directly from Python (`JsonLinesReporter(sys.stderr)`,
`LineReporter(sys.stdout, label="run 1 ")`); `task_reporters` gives `api.run` / the runner one per task.

The JSON lines (format 1). Every object has `"format": 1` (raised if a field changes meaning or
goes away; new fields may appear without it) and `"event"`:

    {"format": 1, "event": "epoch", "model": "s004-m1", "seed": 0, "epoch": 3, "epochs": 5,
     "loss": 0.0364, "acc": 0.9887, "val_loss": 0.0441, "val_acc": 0.9869, "seconds": 4.1,
     "train_eval_loss": 0.0301, "train_eval_acc": 0.9911}
    {"format": 1, "event": "run", "model": "s004-m1", "seed": 0, "run_id": 7, "status": "completed",
     "epochs": 5, "test_acc": 0.9871, "test_loss": 0.0412, "error": null}

An `epoch` event comes per epoch of each run (a seed bundle's seeds each get their own), a `run`
event when a run finishes: `status` is completed, diverged or failed (then `error` says why and
`epochs` may be null); `run_id` is the run store's id (null for `train`). A number that is not
finite (a diverged loss) is null, so every line is valid JSON; strings are data, escaped by JSON.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from mnistlab.training.history import Reporter, RunEnd
from mnistlab.errors import MnistlabError
from mnistlab.report.log_formats import LOG_FORMATS
from mnistlab.util.safetext import one_line, safe_console, text
from mnistlab.training.history import EPOCH_METRICS

if TYPE_CHECKING:
    from mnistlab.experiments.definition import Task

# Reading the running loss syncs with the device; at most this often keeps a GPU busy.
REFRESH_SECONDS = 0.5
LOG_FORMAT_VERSION = 1  # the "format" of every JSON line; see the module docstring


def epoch_line(epoch: int, epochs: int, metrics: dict[str, float]) -> str:
    """`Epoch 3/12 - 4.1s - loss: 0.0364 - acc: 0.9887 - val_loss: 0.0441 - val_acc: 0.9869`."""
    return (
        f"Epoch {epoch}/{epochs} - {metrics['seconds']:.1f}s - loss: {metrics['loss']:.4f} - acc: {metrics['acc']:.4f}"
        f" - val_loss: {metrics['val_loss']:.4f} - val_acc: {metrics['val_acc']:.4f}"
    )


class RichReporter(Reporter):
    """Progress bar with step, loss, accuracy, images/s and ETA; one summary line per epoch."""

    def __init__(self, console: Console, label: str = "") -> None:
        self.console = console
        self.label = one_line(label)  # holds a model id: user text
        self._progress: Progress | None = None
        self._task = None
        self._started = 0.0
        self._last_refresh = 0.0

    def wants_steps(self) -> bool:
        return self.console.is_terminal

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self._started = self._last_refresh = time.perf_counter()
        if not self.console.is_terminal:
            return
        self._progress = Progress(
            # The label goes in as data, never as the format string or markup (it holds a model id).
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task(f"{self.label}Epoch {epoch}/{epochs}", total=steps, stats="")

    def step(self, step: int, steps: int, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int) -> None:
        if self._progress is None:
            return
        now = time.perf_counter()
        if now - self._last_refresh < REFRESH_SECONDS and step < steps:
            return
        self._last_refresh = now
        rate = seen / max(now - self._started, 1e-9)
        stats = f"loss {loss_sum.item() / seen:.4f}  acc {correct.item() / seen:.4f}  {rate:,.0f} img/s"
        self._progress.update(self._task, completed=step, stats=stats)

    def end_epoch(self, epoch: int, epochs: int, metrics: dict[str, float]) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        # soft_wrap: the terminal folds a long line itself; a copy of it stays one line.
        self.console.print(text(f"{self.label}{epoch_line(epoch, epochs, metrics)}"), highlight=False, soft_wrap=True)


class LineReporter(Reporter):
    """One plain line per epoch (`label` + epoch_line), never wrapped, flushed: for pipes, log files, CI."""

    def __init__(self, stream: TextIO | None = None, label: str = "") -> None:
        self.stream = stream  # None: sys.stdout when a line is written
        self.label = label

    def end_epoch(self, epoch: int, epochs: int, metrics: dict[str, float]) -> None:
        stream = self.stream or sys.stdout
        # The label holds a model id: user text, so on one line and without control characters.
        stream.write(one_line(f"{self.label}{epoch_line(epoch, epochs, metrics)}") + "\n")
        stream.flush()


def _number(value: Any) -> float | int | None:
    """A JSON number, or None for a missing or non-finite one (JSON has no NaN)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    value = float(value)
    return value if math.isfinite(value) else None


class JsonLinesReporter(Reporter):
    """One JSON object per epoch and per finished run (the schema is the module docstring's).

    `model` and `seed` name the run the epochs belong to; in a seed bundle each seed's epochs
    come with their own seed (end_seed_epoch), and the bundle's mean is not written."""

    def __init__(self, stream: TextIO | None = None, model: str | None = None, seed: int | None = None) -> None:
        self.stream = stream  # None: sys.stderr when a line is written
        self.model = model
        self.seed = seed
        self._by_seed = False  # this epoch came seed by seed (a bundle)

    def write(self, event: dict[str, Any]) -> None:
        """One event as one line, written at once and flushed (several writers may share the stream)."""
        stream = self.stream or sys.stderr
        stream.write(json.dumps({"format": LOG_FORMAT_VERSION, **event}, allow_nan=False) + "\n")
        stream.flush()

    def _epoch(self, seed: int | None, epoch: int, epochs: int, metrics: dict[str, float]) -> None:
        self.write({"event": "epoch", "model": self.model, "seed": seed, "epoch": epoch, "epochs": epochs,
                    **{key: _number(metrics.get(key)) for key in EPOCH_METRICS}})

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self._by_seed = False

    def end_seed_epoch(self, seed: int, epoch: int, epochs: int, metrics: dict[str, float]) -> None:
        self._by_seed = True
        self._epoch(seed, epoch, epochs, metrics)

    def end_epoch(self, epoch: int, epochs: int, metrics: dict[str, float]) -> None:
        if not self._by_seed:
            self._epoch(self.seed, epoch, epochs, metrics)

    def end_run(self, run: RunEnd) -> None:
        self.write({"event": "run", "model": run.model, "seed": run.seed, "run_id": run.run_id, "status": run.status,
                    "epochs": run.epochs, "test_acc": _number(run.test_acc), "test_loss": _number(run.test_loss),
                    "error": run.error})


def make_reporter(console: Console | None = None, log_format: str = "text", quiet: bool = False, label: str = "",
                  model: str | None = None, seed: int | None = None) -> Reporter:
    """The reporter for a destination (see the module docstring): `console` is where text goes
    (default: stdout); `label` prefixes text lines; `model` / `seed` name the run in JSON events."""
    if log_format not in LOG_FORMATS:
        raise MnistlabError(f"log format '{log_format}': choose {' or '.join(LOG_FORMATS)}")
    if log_format == "json":
        return JsonLinesReporter(model=model, seed=seed)
    if quiet:
        return Reporter()
    console = console or safe_console()
    if console.is_terminal:
        return RichReporter(console, label=label)
    return LineReporter(console.file, label=label)


def task_reporters(tasks: Sequence[Task], console: Console | None = None, log_format: str = "text",
                   quiet: bool = False) -> Callable[[Task], Reporter]:
    """`reporter_for` for api.run / the runner: each task's reporter, text lines labelled
    `[3/8] s002-m1 seed 0 ` by the task's place among `tasks`."""
    positions = {(task.model_id, task.seed): number for number, task in enumerate(tasks, start=1)}

    def reporter_for(task: Task) -> Reporter:
        label = f"[{positions[(task.model_id, task.seed)]}/{len(tasks)}] {task.model_id} seed {task.seed} "
        return make_reporter(console, log_format, quiet, label=label, model=task.model_id, seed=task.seed)

    return reporter_for


__all__ = ["LOG_FORMATS", "LOG_FORMAT_VERSION", "JsonLinesReporter", "LineReporter", "RichReporter", "epoch_line",
           "make_reporter", "task_reporters"]
