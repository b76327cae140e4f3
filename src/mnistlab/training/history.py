"""What a run produced and how it is reported: History, the names of its metrics, run statuses, reporters.

One home for the vocabulary every layer above training shares: the per-epoch metric names (the
store's columns, the diagnoses' inputs), the run statuses the store records, and the Reporter
interface the engine calls as it trains. Imports no torch, so the store and `mnistlab ls` stay light.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from mnistlab.util.display import html_of

if TYPE_CHECKING:
    import torch

    from mnistlab.nn.build import KerasModel

PENDING, RUNNING, COMPLETED, DIVERGED, FAILED = (
    "pending", "running", "completed", "diverged", "failed"
)
STATUSES = (PENDING, RUNNING, COMPLETED, DIVERGED, FAILED)
FINISHED_STATUSES = (COMPLETED, DIVERGED)

# Keras's per-epoch metrics: running means over the epoch's batches (dropout on) and validation.
HISTORY_KEYS = ("loss", "acc", "val_loss", "val_acc")
# Inference-mode training metrics on a fixed subsample (dropout off), which the diagnoses compare
# with validation; optional, and preferred by the rules when every epoch has them.
FIT_KEYS = ("train_eval_loss", "train_eval_acc")
# Everything stored per epoch (the store's columns, in this order).
EPOCH_METRICS = (*HISTORY_KEYS, "seconds", *FIT_KEYS)

Protocol = Literal["split", "test"]


@dataclass
class History:
    """What a run produced: per-epoch metrics, final test metrics, and test predictions."""

    model_id: str
    seed: int
    protocol: Protocol
    device: str
    epochs: list[dict[str, float]] = field(default_factory=list)
    status: Literal["completed", "diverged"] = "completed"
    diverged_epoch: int | None = None
    test_loss: float | None = None
    test_acc: float | None = None
    images_per_second: float | None = None
    images_per_second_note: str = ""
    train_images: int = 0  # images trained on per epoch (after the split and --train-limit)
    test_predictions: list[int] | None = None
    test_labels: list[int] | None = None
    best_epoch: int | None = None  # with early stopping: the epoch whose weights were restored
    stopped_early: bool = False
    threads: int | None = None  # intra-op CPU threads the run trained with
    # How the arithmetic was done where it is not the default: run_notes (precision, subnormals, CPU paths).
    notes: list[str] = field(default_factory=list)
    model: KerasModel | None = field(default=None, repr=False, compare=False)  # the trained model; not serialised

    def series(self, key: str) -> list[float]:
        """One metric over epochs (loss, acc, val_loss, val_acc, seconds, train_eval_loss, train_eval_acc)."""
        return [e.get(key, math.nan) for e in self.epochs]  # checkpoints before train_eval_* lack them

    def to_json(self, predictions: bool = False) -> dict[str, Any]:
        data = asdict(replace(self, model=None))
        data.pop("model")
        if not predictions:
            data.pop("test_predictions")
            data.pop("test_labels")
        for key in EPOCH_METRICS:
            data[key] = self.series(key)
        return data

    def _repr_html_(self) -> str | None:
        """In a notebook: the run's facts, curves and metrics per epoch (mnistlab.report.notebook draws them)."""
        return html_of(self)


@dataclass(frozen=True)
class RunEnd:
    """A finished run as a reporter hears of it; `status` is the store's (completed, diverged, failed).

    `epochs`: epochs trained (None when a failure left it unknown); `run_id`: the store's run, if any."""

    model: str
    seed: int
    status: str
    epochs: int | None = None
    test_acc: float | None = None
    test_loss: float | None = None
    run_id: int | None = None
    error: str | None = None

    @classmethod
    def of(cls, history: History, run_id: int | None = None) -> RunEnd:
        return cls(history.model_id, history.seed, history.status, len(history.epochs), history.test_acc,
                   history.test_loss, run_id)

    @classmethod
    def failed(cls, model: str, seed: int, error: str, run_id: int | None = None) -> RunEnd:
        return cls(model, seed, FAILED, run_id=run_id, error=error)


class Reporter:
    """Receives progress; the base reports nothing (tests and --quiet use it). progress.py holds the
    CLI's reporters (terminal bar, plain lines, JSON lines) and the factory that picks one.

    The engine calls start_epoch / step / end_epoch; a seed bundle also calls end_seed_epoch for
    each of its seeds just before end_epoch gets their mean. end_run is called by whoever finishes
    a run (api.train, the runners), never by the engine."""

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None: ...

    def step(self, step: int, steps: int, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int) -> None: ...

    def end_seed_epoch(self, seed: int, epoch: int, epochs: int, metrics: dict[str, float]) -> None: ...

    def end_epoch(self, epoch: int, epochs: int, metrics: dict[str, float]) -> None: ...

    def end_run(self, run: RunEnd) -> None: ...

    def wants_steps(self) -> bool:
        return False
