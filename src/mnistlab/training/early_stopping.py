"""Early stopping on validation loss, restoring the best epoch's weights at the end.

Keras's ``EarlyStopping(restore_best_weights=True)`` restores only when patience fires; here the
best epoch's weights are restored at the end of training whether or not it fired, so a run's
test figure is always that of its lowest-val_loss epoch (the model selection is made on
validation alone, never on the test set).

With checkpoints (``out_dir``) the best weights are also kept on disk as ``best.safetensors``, so
a resumed run restores the same epoch an uninterrupted one would: epochs replay identically
after a resume, so the file always holds the best of the epochs trained so far.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from mnistlab.util.atomic import write_atomically

__all__ = ["BEST_FILE", "EarlyStopping"]

BEST_FILE = "best.safetensors"


class EarlyStopping:
    """Tracks the lowest val_loss; ``update`` says when ``patience`` epochs passed without a new one."""

    def __init__(self, patience: int, out_dir: Path | None = None) -> None:
        if patience < 1:
            raise ValueError(f"patience must be at least 1 epoch, got {patience}")
        self.patience = patience
        self.out_dir = out_dir
        self.best_loss = math.inf
        self.best_epoch: int | None = None
        self.waited = 0
        self.stopped = False
        self._state: dict[str, torch.Tensor] | None = None

    def resume(self, epochs: Sequence[dict[str, float]], model: torch.nn.Module) -> None:
        """Pick up after a checkpoint: the best so far from the stored history, its weights from disk."""
        for metrics in epochs:
            self._note(int(metrics["epoch"]), float(metrics["val_loss"]))
        best = self.out_dir / BEST_FILE if self.out_dir is not None else None
        if best is not None and best.exists():
            device = next(iter(model.state_dict().values())).device
            self._state = load_file(str(best), device=str(device))

    def _note(self, epoch: int, val_loss: float) -> bool:
        if math.isfinite(val_loss) and val_loss < self.best_loss:
            self.best_loss, self.best_epoch, self.waited = val_loss, epoch, 0
            return True
        self.waited += 1
        return False

    def update(self, epoch: int, val_loss: float, model: torch.nn.Module) -> bool:
        """Record one epoch; True when training should stop."""
        if self._note(epoch, val_loss):
            self._state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if self.out_dir is not None:
                cpu = {k: v.cpu().contiguous() for k, v in self._state.items()}
                self.out_dir.mkdir(parents=True, exist_ok=True)
                write_atomically(self.out_dir / BEST_FILE, lambda tmp: save_file(cpu, str(tmp)))
        self.stopped = self.waited >= self.patience
        return self.stopped

    def restore(self, model: torch.nn.Module) -> None:
        """Load the best epoch's weights (and batch-norm statistics) into ``model``."""
        if self._state is not None:
            model.load_state_dict(self._state)
