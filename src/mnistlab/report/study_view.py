"""A study as api.run shows it: progress while it trains, and the outcome it returns.

`study_progress` turns api.run's `progress=` into the runner's `reporter_for` and listeners
(report.progress names the choices). In a notebook, "auto" adds `LiveStudyDisplay`: one display,
updated in place (IPython's display_id), with each model's loss and accuracy curves so far (the
report's numbers, mean and seed band, drawn as small SVGs by report/live_svg.py), a table of the runs
(pending, training, done) with the current epoch, and an ETA. `StudyOutcome` is what api.run returns:
the runner's RunOutcome, plus the experiment, the store and the best model, shown as HTML in a notebook.

The display must not slow training, so it measures its own time (everything inside its entry points,
`overhead_seconds`, against `wall_seconds`) and redraws only while that stays within PLAN_BUDGET of
the wall time so far; figures of models with new epochs are redrawn as the budget allows (the rest
keep their last picture), and a last redraw at the end shows everything. A model's curves cost about a
millisecond and import neither matplotlib nor pandas, so that last redraw is cheap too. A display that
fails says so in one line and goes quiet; training goes on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mnistlab.errors import MnistlabError
from mnistlab.experiments.definition import Experiment, Task, expand
from mnistlab.report.live_svg import live_curve_images
from mnistlab.report.notebook import number, render
from mnistlab.report.overview import ChosenModel, chosen_models
from mnistlab.report.progress import TqdmReporter, note_once, progress_mode, progress_reporter, task_labels
from mnistlab.runs.events import EpochEnded, Event, Listener, RoundEnded
from mnistlab.runs.records import spec_hash
from mnistlab.runs.store import RunStore
from mnistlab.runs.tasks import RunOutcome
from mnistlab.training.history import FINISHED_STATUSES, PENDING, RUNNING, Reporter, RunEnd
from mnistlab.util.safetext import one_line

if TYPE_CHECKING:
    import torch

__all__ = ["MIN_INTERVAL", "PLAN_BUDGET", "LiveStudyDisplay", "NotebookSurface", "StudyOutcome", "StudyProgress",
           "check_progress", "study_progress"]

# The issue allows the display 2% of the wall time; it plans on half, so that the last redraw
# (always made, whatever it costs) and the bookkeeping between redraws stay inside the 2%.
PLAN_BUDGET = 0.01
MIN_INTERVAL = 2.0  # s between redraws at most this often, however cheap they are
# What a model's two SVG curves cost before one is measured: ~1 ms on a loaded 2-core Xeon
# (report/live_svg.py; measured ones replace it).
FIGURE_SECONDS_GUESS = 0.005
COLUMNS = ("model", "seed", "epoch", "status", "val_acc", "test_acc")
TEXT_COLUMNS = ("model", "status")
SHOWN_STATUS = {RUNNING: "training", PENDING: "pending"}


class Surface(Protocol):
    """Where the display is drawn: `show` once, then `update` in place."""

    def show(self, bundle: dict[str, str]) -> None: ...

    def update(self, bundle: dict[str, str]) -> None: ...


class NotebookSurface:
    """A notebook output with a display id (IPython), updated in place."""

    def __init__(self) -> None:
        try:
            from IPython.display import display
        except ImportError:
            raise MnistlabError("the live display needs IPython: pip install 'mnistlab[notebook]'") from None
        self._display = display
        self._handle: Any = None

    def show(self, bundle: dict[str, str]) -> None:
        self._handle = self._display(bundle, raw=True, display_id=True)

    def update(self, bundle: dict[str, str]) -> None:
        self._handle.update(bundle, raw=True)


@dataclass
class RunState:
    """One (model, seed) of the study as the display knows it."""

    model: str
    seed: int
    epochs: int
    status: str = PENDING
    epoch: int = 0
    val_acc: float = math.nan
    test_acc: float | None = None
    earlier: bool = False  # finished before this call: skipped
    elsewhere: bool = False  # trained (or training) in another process


def _status_text(state: RunState) -> str:
    shown = SHOWN_STATUS.get(state.status, state.status)
    return f"{shown} (earlier)" if state.earlier else f"{shown} (another process)" if state.elsewhere else shown


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


class LiveStudyDisplay:
    """One notebook display following a study; pass it as api.run's `progress=` (or "auto" in a notebook).

    `surface`: where it is drawn (default NotebookSurface); `bars`: also a tqdm bar per running task;
    `figures`: draw the curves (False: the table alone); `budget`: the share of wall time its redraws
    plan to stay within; `clock`: seconds, for the measurements. After the study,
    `overhead_seconds` / `wall_seconds` is the display's measured share of the wall time."""

    def __init__(self, surface: Surface | None = None, *, bars: bool = True, figures: bool = True,
                 budget: float = PLAN_BUDGET, min_interval: float = MIN_INTERVAL,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.surface = surface
        self.bars = bars
        self.figures = figures
        self.budget = budget
        self.min_interval = min_interval
        self.clock = clock
        self.overhead_seconds = 0.0
        self.redraws = 0
        self.figure_redraws = 0  # models whose figures were drawn, summed over redraws
        self.experiment = ""
        self.ended: str | None = None  # "finished", or why it stopped
        self._runs: dict[tuple[str, int], RunState] = {}
        self._label: Callable[[Task], str] = lambda task: ""
        self._epochs: dict[str, list[dict[str, Any]]] = {}  # model -> every epoch of it seen: its curves' data
        self._drawn: dict[str, int] = {}  # model -> its epochs when its figures were last drawn
        self._images: dict[str, list[tuple[str, str]]] = {}
        self._figure_seconds = FIGURE_SECONDS_GUESS
        self._update_seconds = 0.0  # the last update's cost, figures apart: the table and sending it
        self._started: float | None = None
        self._stopped: float | None = None
        self._last_draw = -math.inf
        self._epochs_seen = 0
        self._broken = False
        self._store: RunStore | None = None

    @property
    def wall_seconds(self) -> float:
        if self._started is None:
            return 0.0
        return (self._stopped if self._stopped is not None else self.clock()) - self._started

    @contextmanager
    def _timed(self) -> Iterator[None]:
        started = self.clock()
        try:
            yield
        except Exception as error:  # the display must never stop the study
            self._broken = True
            note_once(f"mnistlab: the live display stopped ({one_line(error)}); training goes on")
        finally:
            self.overhead_seconds += self.clock() - started

    # -- what the study tells it ------------------------------------------------------------------

    def start(self, experiment: str, tasks: Sequence[Task], store: RunStore | None = None) -> None:
        """Show the study's runs, those finished before this call as done (with their curves)."""
        self._started = self.clock()
        with self._timed():
            self.experiment, self._store = experiment, store
            self._label = task_labels(tasks)
            stored = {(run.model_id, run.spec_hash, run.seed): run for run in store.runs(experiment)} if store else {}
            for task in tasks:
                state = RunState(task.model_id, task.seed, task.spec.training.epochs)
                self._runs[(task.model_id, task.seed)] = state
                run = stored.get((task.model_id, spec_hash(task.run_config()), task.seed))
                if run is not None and store is not None:
                    self._stored(state, run.id, run.status, run.final, store.history(run.id))
            if self.surface is None:
                self.surface = NotebookSurface()
            self.surface.show(self._bundle())
            self._last_draw = self.clock()

    def _stored(self, state: RunState, run_id: int, status: str, final: dict[str, Any] | None,
                history: dict[str, list[float]]) -> None:
        state.earlier = status in FINISHED_STATUSES
        state.status = status if state.earlier else PENDING
        state.epoch = int(history["epoch"][-1]) if history["epoch"] else 0
        state.test_acc = (final or {}).get("test_acc")
        for index, epoch in enumerate(history["epoch"]):
            self._add_epoch({"run_id": run_id, "model": state.model, "seed": state.seed, "epoch": epoch,
                             **{key: values[index] for key, values in history.items() if key != "epoch"}})
            state.val_acc = history["val_acc"][index]

    def _add_epoch(self, row: dict[str, Any]) -> None:
        self._epochs.setdefault(row["model"], []).append(row)

    def reporter_for(self, task: Task) -> Reporter:
        """The runner's reporter for a task: marks it training, and draws its bar if `bars`."""
        inner = (TqdmReporter(self._label(task), per_epoch=False, leave=False) if self.bars else Reporter())
        return _WatchedReporter(self, task, inner)

    def run_started(self, model: str, seed: int, epoch: int) -> None:
        with self._timed():
            state = self._runs.get((model, seed))
            if state is not None and state.status == PENDING:
                state.status, state.epoch = RUNNING, epoch - 1
                self._redraw()

    def __call__(self, event: Event) -> None:
        """The listener: each epoch and run end as the runner emits them."""
        with self._timed():
            if isinstance(event, EpochEnded):
                state = self._state(event.model, event.seed, event.epochs)
                state.status, state.epoch = RUNNING, event.epoch
                state.val_acc = float(event.metrics.get("val_acc", math.nan))
                self._add_epoch({"run_id": event.run_id, "model": event.model, "seed": event.seed,
                                 "epoch": event.epoch, **event.metrics})
                self._epochs_seen += 1
            elif isinstance(event, RunEnd):
                state = self._state(event.model, event.seed, event.epochs or 0)
                state.status, state.test_acc = event.status, event.test_acc
                if event.epochs:
                    state.epoch = event.epochs
            elif isinstance(event, RoundEnded):
                self._settle(event.run_ids)
            self._redraw()

    def _settle(self, run_ids: Sequence[int]) -> None:
        """At the end of a round: runs this call did not train are as the store has them (another
        process may have trained them, or be training them still)."""
        if self._store is None:
            return
        for run_id in run_ids:
            run = self._store.get_run(run_id)
            state = self._runs.get((run.model_id, run.seed))
            if state is not None and state.status == PENDING and run.status != PENDING:
                state.status, state.elsewhere = run.status, True
                state.test_acc = (run.final or {}).get("test_acc")

    def _state(self, model: str, seed: int, epochs: int) -> RunState:
        return self._runs.setdefault((model, seed), RunState(model, seed, epochs))

    def close(self, stopped: str | None = None) -> None:
        """The last redraw, with every figure: "finished", or `stopped` saying why not."""
        if self._started is None or self._stopped is not None:
            return
        with self._timed():
            self.ended = stopped or "finished"
            self._redraw(force=True)
        self._stopped = self.clock()

    # -- drawing ---------------------------------------------------------------------------------------

    def _redraw(self, force: bool = False) -> None:
        if self._broken or self.surface is None:
            return
        now = self.clock()
        stale = [model for model, rows in self._epochs.items()
                 if self.figures and self._drawn.get(model) != len(rows)]
        if not force:
            if now - self._last_draw < self.min_interval:
                return
            # What may still be spent now: the budget of the wall time so far, less what was spent.
            allowance = self.budget * self.wall_seconds - self.overhead_seconds
            if allowance <= self._update_seconds:
                return
            spare = allowance - self._update_seconds
            stale = stale[:max(0, int(spare // max(self._figure_seconds, 1e-3)))]
        if stale:
            self._draw_figures(stale)
        started = self.clock()
        self.surface.update(self._bundle())
        self._last_draw = self.clock()
        self._update_seconds = self._last_draw - started
        self.redraws += 1

    def _draw_figures(self, models: list[str]) -> None:
        started = self.clock()
        for model in models:
            rows = self._epochs[model]
            self._images[model] = live_curve_images(rows, model)
            self._drawn[model] = len(rows)
        self.figure_redraws += len(models)
        measured = (self.clock() - started) / len(models)
        self._figure_seconds = max(measured, self._figure_seconds / 2)  # follow it down slowly, up at once

    def _counts(self) -> dict[str, int]:
        counts = {"done": 0, "training": 0, "pending": 0, "failed": 0}
        for state in self._runs.values():
            key = ("done" if state.status in FINISHED_STATUSES else "failed" if state.status not in (PENDING, RUNNING)
                   else SHOWN_STATUS[state.status])
            counts[key] += 1
        return counts

    def _eta(self) -> str:
        left = sum(max(state.epochs - state.epoch, 0) for state in self._runs.values()
                   if state.status in (PENDING, RUNNING))
        if not self._epochs_seen or not left or self._started is None:
            return "ETA: after the first epoch" if left else ""
        # Wall time per epoch so far, loading and testing included: rough, but it only ever uses what it saw.
        return f"ETA about {_duration(self.wall_seconds / self._epochs_seen * left)}"

    def summary(self) -> str:
        """The display's first line, also its plain-text form."""
        counts = self._counts()
        parts = [f"{counts['done']} of {len(self._runs)} runs done", f"{counts['training']} training",
                 f"{counts['pending']} pending"] + ([f"{counts['failed']} failed"] if counts["failed"] else [])
        training = [state for state in self._runs.values() if state.status == RUNNING]
        if training:
            parts.append("; ".join(f"{state.model} seed {state.seed}: epoch {state.epoch}/{state.epochs}"
                                   for state in training))
        elapsed = f"{self.ended or 'running'} after {_duration(self.wall_seconds)}"
        eta = "" if self.ended else self._eta()
        return one_line(", ".join(parts) + f" · {elapsed}" + (f" · {eta}" if eta else ""))

    def html(self) -> str:
        rows = [(state.status, [state.model, str(state.seed), f"{state.epoch}/{state.epochs}",
                                _status_text(state),
                                number(state.val_acc), number(state.test_acc)])
                for state in self._runs.values()]
        images = [image for model in self._images for image in self._images[model]]
        note = (f"Curves: mean over each model's runs so far with a 95% CI band. Display time "
                f"{self.overhead_seconds:.2f} s of {_duration(self.wall_seconds)} "
                f"({self.overhead_seconds / max(self.wall_seconds, 1e-9):.1%}); redrawn {self.redraws} times.")
        return render("live", title=f"Study {self.experiment}", summary=self.summary(), columns=list(COLUMNS),
                      rows=rows, text_columns=TEXT_COLUMNS, images=images, note=note)

    def _bundle(self) -> dict[str, str]:
        return {"text/plain": f"{self.experiment}: {self.summary()}", "text/html": self.html()}

    def _repr_html_(self) -> str:
        return self.html()


class _WatchedReporter(Reporter):
    """A task's reporter that tells the display when the task starts training, then its bar."""

    def __init__(self, display: LiveStudyDisplay, task: Task, inner: Reporter) -> None:
        self.display, self.task, self.inner = display, task, inner

    def wants_steps(self) -> bool:
        return self.inner.wants_steps()

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self.display.run_started(self.task.model_id, self.task.seed, epoch)
        self.inner.start_epoch(epoch, epochs, steps)

    def step(self, step: int, steps: int, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int) -> None:
        self.inner.step(step, steps, loss_sum, correct, seen)

    def end_seed_epoch(self, seed: int, epoch: int, epochs: int, metrics: dict[str, float]) -> None:
        self.inner.end_seed_epoch(seed, epoch, epochs, metrics)

    def end_epoch(self, epoch: int, epochs: int, metrics: dict[str, float]) -> None:
        self.inner.end_epoch(epoch, epochs, metrics)

    def end_run(self, run: RunEnd) -> None:
        self.inner.end_run(run)


# -- what api.run returns ------------------------------------------------------------------------------


@dataclass
class StudyOutcome(RunOutcome):
    """What one api.run call did (RunOutcome's lists of run ids), in which experiment and store, and
    the model its report chooses (on validation), as the store holds it after the call."""

    experiment: str = ""
    store: Path | None = None
    best: ChosenModel | None = field(default=None)

    @classmethod
    def of(cls, outcome: RunOutcome, store: RunStore, experiment: str) -> StudyOutcome:
        return cls(**{item.name: getattr(outcome, item.name) for item in fields(RunOutcome)},
                   experiment=experiment, store=store.root,
                   best=chosen_models(store).get(experiment))

    def _repr_html_(self) -> str:
        counts = [("trained", len(self.trained)), ("already done", len(self.skipped_finished)),
                  ("left to another process", len(self.skipped_claimed) + len(self.lost)),
                  ("failed", len(self.failed)), ("runs in the study", len(self.run_ids))]
        if self.best is None:
            best = "No finished run has a test figure yet."
        else:
            seeds = f"{self.best.seeds} seed{'s' if self.best.seeds != 1 else ''}"
            best = (f"Best model, chosen on validation alone: {self.best.model} (mean test accuracy "
                    f"{self.best.test_acc_mean:.2%} over {seeds}).")
        return render("outcome", title=f"Study {self.experiment}", counts=counts, best=best,
                      store=f"store: {self.store}; api.show_report(store, {self.experiment!r}) shows its report")


# -- api.run's progress= -----------------------------------------------------------------------------


class StudyProgress:
    """The runner's reporter_for and listeners for one api.run call; closes its display on the way out."""

    def __init__(self, reporter_for: Callable[[Task], Reporter] | None, listeners: Sequence[Listener],
                 display: LiveStudyDisplay | None = None) -> None:
        self.reporter_for = reporter_for
        self.listeners = list(listeners)
        self.display = display

    def options(self) -> dict[str, Any]:
        return {"reporter_for": self.reporter_for, "listeners": self.listeners}

    def __enter__(self) -> StudyProgress:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: Any) -> None:
        if self.display is not None:
            self.display.close(None if error is None else f"stopped ({kind.__name__ if kind else 'error'})")

    @staticmethod
    def finish(outcome: RunOutcome, store: RunStore, experiment: str) -> StudyOutcome:
        return StudyOutcome.of(outcome, store, experiment)


def check_progress(progress: Any, reporter_for: Callable[[Task], Reporter] | None = None) -> None:
    """A one-line MnistlabError for a `progress` that names nothing, ValueError for both it and `reporter_for`."""
    if reporter_for is not None and not (isinstance(progress, str) and progress == "auto"):
        raise ValueError("run: give reporter_for or progress, not both")
    if not isinstance(progress, (Reporter, LiveStudyDisplay)):
        progress_mode(progress)


def study_progress(progress: Any, study: Experiment, store: RunStore, source: str | None = None,
                   reporter_for: Callable[[Task], Reporter] | None = None,
                   listeners: Sequence[Listener] = ()) -> StudyProgress:
    """What api.run's `progress` means for this study (report.progress.PROGRESS_CHOICES, a Reporter for
    every task, or a LiveStudyDisplay); a `reporter_for` given replaces it ("auto" then adds nothing)."""
    check_progress(progress, reporter_for)
    if reporter_for is not None:
        return StudyProgress(reporter_for, listeners)
    if isinstance(progress, Reporter):
        return StudyProgress(lambda task: progress, listeners)
    tasks = expand(study, source or "<python>")
    if isinstance(progress, LiveStudyDisplay):
        display = progress
    else:
        mode = progress_mode(progress)
        if not (progress == "auto" and mode == "tqdm"):  # the live display: "auto" in a notebook
            label = task_labels(tasks)
            return StudyProgress(lambda task: progress_reporter(mode, label(task), task.model_id, task.seed,
                                                                per_epoch=False), listeners)
        display = LiveStudyDisplay()
    display.start(study.name, tasks, store)
    return StudyProgress(display.reporter_for, [display, *listeners], display)
