"""Early stopping on val_loss: when it fires, and that the best epoch's weights are restored
whether or not it fires (also across a resume)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mnistlab.api import train
from mnistlab.training.early_stopping import BEST_FILE, EarlyStopping
from mnistlab.training.config import TrainConfig
from mnistlab.training.engine import evaluate, fit, place_data

from test_engine import metric_rows, tiny_spec


def test_stops_after_patience_epochs_without_a_new_minimum_and_restores_the_best():
    model = torch.nn.Linear(2, 2)
    stopper = EarlyStopping(patience=2)
    weights = {}
    for epoch, val_loss in enumerate([1.0, 0.5, 0.6, 0.55, 0.4], start=1):
        with torch.no_grad():
            model.weight.fill_(epoch)  # each epoch's weights are recognisable
        weights[epoch] = model.weight.clone()
        if stopper.update(epoch, val_loss, model):
            break
    assert epoch == 4 and stopper.stopped and stopper.best_epoch == 2  # 0.6, 0.55: two epochs above 0.5
    stopper.restore(model)
    assert torch.equal(model.weight, weights[2])
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(patience=0)


def test_non_finite_val_loss_never_counts_as_best():
    model = torch.nn.Linear(2, 2)
    stopper = EarlyStopping(patience=5)
    for epoch, val_loss in enumerate([0.9, float("nan"), 0.8], start=1):
        stopper.update(epoch, val_loss, model)
    assert stopper.best_epoch == 3 and not stopper.stopped


def val_loss_of(history, dataset, config) -> float:
    data = place_data(dataset, config, torch.device("cpu"))
    loss, _, _ = evaluate(history.model, data.val_x, data.val_y, config.precision)
    return loss.item() / len(data.val_y)


def test_fit_restores_the_best_epoch_even_when_patience_never_fires(tiny_dataset):
    config = TrainConfig(seed=2, device="cpu", patience=50)
    spec = tiny_spec(epochs=6, optimizer={"name": "adam", "lr": 0.05})  # a high rate: val_loss wanders
    history = fit(spec, tiny_dataset, config)
    losses = [e["val_loss"] for e in history.epochs]
    assert len(losses) == 6 and not history.stopped_early
    assert history.best_epoch == int(np.argmin(losses)) + 1
    # The model that was tested is the best epoch's: its validation loss is that epoch's.
    assert val_loss_of(history, tiny_dataset, config) == pytest.approx(min(losses), rel=1e-5)


def test_fit_stops_early_and_records_where(tiny_dataset):
    config = TrainConfig(seed=2, device="cpu", patience=1)
    history = fit(tiny_spec(epochs=12, optimizer={"name": "adam", "lr": 0.05}), tiny_dataset, config)
    losses = [e["val_loss"] for e in history.epochs]
    # Which epoch is best depends on the CPU's rounding (tests/README.md), so the rule is checked,
    # not the epoch: patience 1 stops one epoch after the minimum, at the first epoch without a new one.
    assert history.stopped_early and history.best_epoch == int(np.argmin(losses)) + 1
    assert len(losses) == history.best_epoch + 1
    assert not losses[-1] < losses[-2] and all(a > b for a, b in zip(losses[:-2], losses[1:-1]))
    assert val_loss_of(history, tiny_dataset, config) == pytest.approx(min(losses), rel=1e-5)


def test_resumed_run_restores_the_same_epoch_as_an_uninterrupted_one(tmp_path, tiny_dataset):
    spec = lambda epochs: tiny_spec(epochs=epochs, optimizer={"name": "adam", "lr": 0.05})  # noqa: E731
    full = fit(spec(6), tiny_dataset, TrainConfig(seed=4, device="cpu", patience=50))
    fit(spec(3), tiny_dataset, TrainConfig(seed=4, device="cpu", patience=50, out_dir=tmp_path))
    assert (tmp_path / BEST_FILE).exists()
    resumed = fit(spec(6), tiny_dataset, TrainConfig(seed=4, device="cpu", patience=50, out_dir=tmp_path, resume=True))
    assert metric_rows(resumed) == metric_rows(full)
    assert resumed.best_epoch == full.best_epoch
    assert resumed.test_predictions == full.test_predictions


def test_python_api_takes_patience(tiny_dataset):
    history = train(tiny_spec(epochs=2), tiny_dataset, seed=0, device="cpu", patience=3)
    assert history.best_epoch in (1, 2) and history.to_json()["best_epoch"] == history.best_epoch
