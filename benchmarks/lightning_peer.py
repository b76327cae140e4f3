"""PyTorch Lightning peer: the same model and DataLoader as torch_peer.py, trained by a Lightning Trainer.

What a Lightning user writes: a LightningModule around mnistlab's own nn.Module (identical layers and
initialisation), `training_step` returning the loss, `configure_optimizers` returning the torch.optim
translation of the Keras 2.2 optimizer, and `Trainer(max_epochs=...)` with logging, checkpointing,
progress bar and model summary switched off so that only training is measured. Epoch times come
from a callback (start and end of each training epoch, after a device synchronisation).
"""

from __future__ import annotations

import time
from typing import Any

from torch_peer import make_torch_optimizer


def train_lightning(spec: Any, images: Any, labels: Any, batch_size: int, epochs: int, device: str = "cpu",
                    seed: int = 0) -> dict[str, Any]:
    """``epochs`` timed epochs after one warm-up epoch, as torch_peer.train_dataloader measures them."""
    import lightning as L
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from mnistlab.nn.build import build_model, prepare_input
    from mnistlab.spec.vocabulary import OPTIMIZER_DEFAULTS

    torch.manual_seed(seed)
    x = prepare_input(torch.as_tensor(images), spec.input)
    loader = DataLoader(TensorDataset(x, torch.as_tensor(labels).long()), batch_size=batch_size, shuffle=True)
    args = dict(OPTIMIZER_DEFAULTS[spec.training.optimizer.name])
    args.update({("lr" if k == "learning_rate" else k): v for k, v in spec.training.optimizer.args.items()})

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = build_model(spec, seed=seed)
            self.criterion = nn.CrossEntropyLoss()

        def training_step(self, batch: Any, _index: int) -> torch.Tensor:
            xb, yb = batch
            out = self.net(xb)
            loss = self.criterion(out, yb)
            self.log("loss", loss, prog_bar=False)
            return loss

        def configure_optimizers(self) -> Any:
            return make_torch_optimizer(torch, spec.training.optimizer.name, args, self.parameters())

    class EpochTimer(L.Callback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self._start = 0.0

        def _sync(self) -> None:
            if torch.cuda.is_available() and device.startswith("cuda"):
                torch.cuda.synchronize()

        def on_train_epoch_start(self, *_: Any) -> None:
            self._sync()
            self._start = time.perf_counter()

        def on_train_epoch_end(self, *_: Any) -> None:
            self._sync()
            self.seconds.append(time.perf_counter() - self._start)

    timer = EpochTimer()
    trainer = L.Trainer(
        accelerator="gpu" if device.startswith("cuda") else "cpu", devices=1, max_epochs=epochs + 1,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[timer], num_sanity_val_steps=0,
    )
    trainer.fit(Module(), loader)
    timed = timer.seconds[1:]
    return {
        "framework": "lightning", "model": spec.id, "images": len(x), "batch_size": batch_size, "device": device,
        "lightning": L.__version__, "epoch_seconds": timer.seconds, "timed_epochs": len(timed),
        "timed_seconds": sum(timed), "images_per_second": len(x) * len(timed) / sum(timed),
    }
