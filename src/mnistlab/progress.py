"""Terminal progress for training: a rich bar per epoch and a Keras-like line when it ends."""

from __future__ import annotations

import time

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from mnistlab.engine import Reporter
from mnistlab.safetext import one_line, text

# Reading the running loss syncs with the device; at most this often keeps a GPU busy.
REFRESH_SECONDS = 0.5


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
        self.console.print(text(f"{self.label}{epoch_line(epoch, epochs, metrics)}"), highlight=False)
