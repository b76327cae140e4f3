"""Training progress for its destination: the one home of the reporters and of the factory that picks one.

`make_reporter(console, log_format, quiet, label, model, seed)` chooses:

- `log_format="json"`: `JsonLinesReporter`, one JSON object per line on stderr (even with
  `quiet`: JSON is an explicit request for machine logs, and stdout keeps what it carries);
- `quiet`: the silent `engine.Reporter`;
- a terminal: `RichReporter`, a progress bar per epoch and a Keras-like line when it ends;
- anything else (a pipe, a log file, CI): `LineReporter`, that line alone, never wrapped, flushed.

`api.train` and `api.run` take `progress=` instead (`PROGRESS_CHOICES`; `progress_reporter`):
"auto" is `TqdmReporter` bars in a Jupyter/Colab kernel (widgets where ipywidgets is installed,
text bars otherwise), `RichReporter` on a terminal, and nothing in a pipe or under pytest; "rich",
"tqdm", "lines", "json" and "none" ask for one; a Reporter object is used as it is.

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

from mnistlab.training.history import FAILED, Reporter, RunEnd
from mnistlab.errors import MnistlabError
from mnistlab.report.log_formats import LOG_FORMATS
from mnistlab.util.safetext import one_line, safe_console, text
from mnistlab.util.where import in_notebook, under_pytest
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
    label = task_labels(tasks)

    def reporter_for(task: Task) -> Reporter:
        return make_reporter(console, log_format, quiet, label=label(task), model=task.model_id, seed=task.seed)

    return reporter_for


def task_labels(tasks: Sequence[Task]) -> Callable[[Task], str]:
    """Each task's label, `[3/8] s002-m1 seed 0 `, by its place among `tasks`."""
    positions = {(task.model_id, task.seed): number for number, task in enumerate(tasks, start=1)}
    return lambda task: f"[{positions[(task.model_id, task.seed)]}/{len(tasks)}] {task.model_id} seed {task.seed} "


# -- progress= for api.train and api.run -------------------------------------------------------------

PROGRESS_CHOICES = ("auto", "rich", "tqdm", "lines", "json", "none")
NO_WIDGETS_NOTE = ("mnistlab: progress bars in a notebook need ipywidgets (pip install 'mnistlab[notebook]'); "
                   "showing text bars instead")
_noted: set[str] = set()  # one-line notes already given in this process


def note_once(message: str) -> None:
    """Write a one-line note on stderr, once per process."""
    if message not in _noted:
        _noted.add(message)
        print(message, file=sys.stderr, flush=True)


def progress_mode(progress: str) -> str:
    """The concrete choice `progress` makes here: "auto" becomes "tqdm" in a notebook, "rich" on a
    terminal and "none" in a pipe or under pytest (a notebook first: a kernel that pytest started is
    still a notebook). A one-line MnistlabError for anything not in PROGRESS_CHOICES."""
    if progress not in PROGRESS_CHOICES:
        raise MnistlabError(f"progress '{progress}': choose {', '.join(PROGRESS_CHOICES)} or a Reporter")
    if progress != "auto":
        return progress
    if in_notebook():
        return "tqdm"
    if under_pytest() or not safe_console().is_terminal:
        return "none"
    return "rich"


def progress_reporter(progress: str | Reporter, label: str = "", model: str | None = None, seed: int | None = None,
                      per_epoch: bool = True) -> Reporter:
    """The reporter `progress` names (see `progress_mode`); a Reporter is returned as it is. `label`
    prefixes text; `model` / `seed` name the run in JSON events; `per_epoch`: a tqdm bar per epoch
    (Keras's look, for one model) rather than one bar for the whole run (a study's tasks)."""
    if isinstance(progress, Reporter):
        return progress
    mode = progress_mode(progress)
    if mode == "rich":
        return RichReporter(safe_console(), label=label)
    if mode == "tqdm":
        return TqdmReporter(label=label, per_epoch=per_epoch)
    if mode == "lines":
        return LineReporter(sys.stdout, label=label)
    if mode == "json":
        return JsonLinesReporter(sys.stderr, model=model, seed=seed)
    return Reporter()


def train_reporter(reporter: Reporter | None, progress: str | Reporter, model: str, seeds: Sequence[int] | None,
                   seed: int = 0) -> Reporter:
    """api.train's reporter: `reporter` if given (then `progress` must be left at "auto"), else the one
    `progress` names, labelled "3 seeds " for a seed bundle."""
    if reporter is not None:
        if not (isinstance(progress, str) and progress == "auto"):
            raise ValueError("train: give reporter or progress, not both")
        return reporter
    return progress_reporter(progress, f"{len(seeds)} seeds " if seeds else "", model, seeds[0] if seeds else seed)


def tqdm_class() -> type:
    """tqdm.auto's choice made explicit: notebook widgets in a kernel with ipywidgets, else text bars
    (in a kernel without ipywidgets, after a one-line note saying how to get widgets)."""
    if in_notebook():
        try:
            import ipywidgets  # noqa: F401  (tqdm.notebook draws with it)
        except ImportError:
            note_once(NO_WIDGETS_NOTE)
        else:
            from tqdm.notebook import tqdm as notebook_tqdm

            return notebook_tqdm
    from tqdm.std import tqdm as text_tqdm

    return text_tqdm


class TqdmReporter(Reporter):
    """tqdm progress bars: widgets in a notebook, text elsewhere (`tqdm_class`).

    `per_epoch=True` (api.train): a bar per epoch, kept with the epoch's metrics when it ends, as
    Keras's fit shows them. `per_epoch=False` (a study's task): one bar over all the run's epochs,
    closed when the run ends (`leave`: kept on screen then)."""

    def __init__(self, label: str = "", per_epoch: bool = True, leave: bool = True, file: TextIO | None = None,
                 bar: type | None = None) -> None:
        self.label = one_line(label)  # holds a model id: user text, one line
        self.per_epoch = per_epoch
        self.leave = leave
        self.file = file
        self.bar_class = bar
        self._bar: Any = None
        self._offset = 0  # steps of the run's earlier epochs (per_epoch=False)
        self._done = 0  # steps shown so far
        self._last_refresh = 0.0

    def wants_steps(self) -> bool:
        return True

    def _open(self, total: int, description: str, initial: int = 0) -> None:
        bar = self.bar_class or tqdm_class()
        self._bar = bar(total=total, initial=initial, desc=description, leave=self.leave, file=self.file,
                        dynamic_ncols=True, unit="step")
        self._done = initial

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self._last_refresh = time.perf_counter()
        if self.per_epoch:
            self._offset = 0
            self._open(steps, f"{self.label}Epoch {epoch}/{epochs}")
            return
        self._offset = (epoch - 1) * steps  # a resumed run starts part-way
        if self._bar is None:
            self._open(epochs * steps, f"{self.label}".strip() or "run", initial=self._offset)
        else:
            self._bar.set_description_str(f"{self.label}epoch {epoch}/{epochs}".strip(), refresh=False)

    def step(self, step: int, steps: int, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int) -> None:
        if self._bar is None:
            return
        now = time.perf_counter()
        if now - self._last_refresh < REFRESH_SECONDS and step < steps:
            return  # reading the running loss syncs with the device: at most this often
        self._last_refresh = now
        self._bar.set_postfix_str(f"loss {loss_sum.item() / seen:.4f}, acc {correct.item() / seen:.4f}",
                                  refresh=False)
        self._bar.update(self._offset + step - self._done)
        self._done = self._offset + step

    def end_epoch(self, epoch: int, epochs: int, metrics: dict[str, float]) -> None:
        if self._bar is None:
            return
        self._bar.set_postfix_str(f"loss {metrics['loss']:.4f}, acc {metrics['acc']:.4f}, "
                                  f"val_loss {metrics['val_loss']:.4f}, val_acc {metrics['val_acc']:.4f}",
                                  refresh=False)
        if self.per_epoch:
            self._bar.update(self._bar.total - self._done)
            self._close()

    def end_run(self, run: RunEnd) -> None:
        if self._bar is not None:
            if run.status != FAILED and self._bar.total is not None:
                self._bar.update(self._bar.total - self._done)  # a run stopped early is done all the same
            self._close()

    def _close(self) -> None:
        self._bar.close()
        self._bar = None


__all__ = ["LOG_FORMATS", "LOG_FORMAT_VERSION", "PROGRESS_CHOICES", "JsonLinesReporter", "LineReporter", "RichReporter",
           "TqdmReporter", "epoch_line", "make_reporter", "note_once", "progress_mode", "progress_reporter",
           "task_labels", "task_reporters", "tqdm_class", "train_reporter"]
