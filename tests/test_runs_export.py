"""Runs out: an experiment's runs written as TensorBoard event files and MLflow runs, read back with
TensorBoard's and MLflow's own readers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from cli_driver import run_cli
from mnistlab import api
from mnistlab.runs.store import RunStore
from mnistlab.zoo import get_model

EXPERIMENT = "study"


@pytest.fixture()
def store_root(tmp_path: Path) -> Path:
    """A store with two runs of one experiment: s004-m1 seeds 0 and 1, three epochs each."""
    root = tmp_path / "runs"
    with RunStore(root) as store:
        store.save_experiment(EXPERIMENT, {"name": EXPERIMENT, "dataset": "mnist"})
        for seed in (0, 1):
            run = store.ensure_run(EXPERIMENT, "s004-m1", get_model("s004-m1").to_dict(), seed, "mnist", "split", 3)
            assert store.claim_run(run.id, "test:1")
            for epoch in (1, 2, 3):
                store.record_epoch(run.id, epoch, {"loss": 1.0 / epoch + seed, "acc": 0.8 + 0.01 * epoch,
                                                   "val_loss": 1.5 / epoch, "val_acc": 0.7 + 0.02 * epoch,
                                                   "seconds": 1.0, "train_eval_loss": math.nan})
            store.finish_run(run.id, "completed", {"test_loss": 0.1 + seed, "test_acc": 0.97}, np.zeros(3, np.int64),
                             np.zeros(3, np.int64), "cpu", {"torch": "x"})
    return root


def test_tensorboard_event_files(store_root: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    for _ in range(2):  # a second export replaces the first, it does not add to it
        written = api.export_runs(EXPERIMENT, "tensorboard", out, store=store_root)
    assert sorted(p.name for p in written) == ["s004-m1-seed0", "s004-m1-seed1"]
    assert sorted(p.name for p in out.iterdir()) == ["s004-m1-seed0", "s004-m1-seed1"]
    events = EventAccumulator(str(out / "s004-m1-seed1"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    loss = events.Scalars("loss")
    assert [e.step for e in loss] == [1, 2, 3]
    assert [round(e.value, 5) for e in loss] == [2.0, 1.5, round(1 / 3 + 1, 5)]
    assert "train_eval_loss" not in events.Tags()["scalars"]  # NaN epochs are not written
    plugins = events.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in plugins
    assert b"s004-m1" in plugins["_hparams_/session_start_info"]


def test_mlflow_runs(store_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    mlruns = tmp_path / "mlruns"
    for _ in range(2):  # exporting again replaces the runs
        ids = api.export_runs(EXPERIMENT, "mlflow", mlruns, store=store_root)
    client = MlflowClient(tracking_uri=mlruns.resolve().as_uri())
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_id for r in runs) == sorted(ids)
    by_seed = {r.data.tags["mnistlab.seed"]: r for r in runs}
    assert set(by_seed) == {"0", "1"}
    run = by_seed["1"]
    assert run.data.tags["mnistlab.model"] == "s004-m1" and run.data.tags["mnistlab.experiments.definition"] == EXPERIMENT
    assert run.data.params["optimizer"] == "adam" and run.data.params["batch_size"] == "128"
    assert run.data.metrics["final/test_loss"] == pytest.approx(1.1)
    history = client.get_metric_history(run.info.run_id, "val_acc")
    assert [(m.step, round(m.value, 5)) for m in sorted(history, key=lambda m: m.step)] == [(1, 0.72), (2, 0.74), (3, 0.76)]
    assert run.info.status == "FINISHED"


def test_cli_export_runs(store_root: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    code, out, err = run_cli("export-runs", EXPERIMENT, "--to", "tensorboard", tmp_path / "tb", "--store", store_root)
    assert code == 0 and "exported 2 run(s) to tensorboard" in out, err
    code, _, err = run_cli("export-runs", "nope", "--to", "tensorboard", tmp_path / "tb", "--store", store_root)
    assert code == 2 and "no runs of experiment 'nope'" in err


def test_mlflow_errors_are_one_line(store_root: Path) -> None:
    pytest.importorskip("mlflow")
    code, _, err = run_cli("export-runs", EXPERIMENT, "--to", "mlflow", "nosuchscheme://x", "--store", store_root)
    assert code == 2 and err.startswith("error: mlflow at nosuchscheme://x: ") and len(err.strip().splitlines()) == 1
