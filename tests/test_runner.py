"""Experiments end to end: expansion, the store, idempotent re-runs, crashes, concurrency."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from mnistlab.errors import SpecError
from mnistlab.experiments.definition import builtin_experiments, expand, load_experiment, parse_experiment
from mnistlab.runs.runner import run_experiment
from mnistlab.runs.store import RunStore
from cli_driver import spawn_cli

from conftest import TINY_CNN

TINY_MLP = {
    "id": "tiny-mlp",
    "input": [784],
    "layers": [
        {"type": "Dense", "units": 32, "activation": "relu"},
        {"type": "Dropout", "rate": 0.2},
        {"type": "Dense", "units": 10, "activation": "softmax"},
    ],
    "training": {"optimizer": "adam", "batch_size": 32, "epochs": 1},
}


def tiny_experiment(data_dir: Path, name: str = "tiny", epochs: int = 1, seeds=(0, 1), cnn_filters: int = 4) -> dict:
    cnn = yaml.safe_load(TINY_CNN.replace("filters: 4", f"filters: {cnn_filters}"))
    return {
        "name": name,
        "dataset": str(data_dir),
        "protocol": "split",
        "defaults": {"epochs": epochs, "device": "cpu"},
        "seeds": list(seeds),
        "models": [{"spec": TINY_MLP}, {"spec": cnn}],
    }


def write_experiment(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_expand_gives_one_task_per_model_and_seed(tiny_data_dir):
    experiment = parse_experiment(tiny_experiment(tiny_data_dir, seeds=(0, 1, 2)))
    tasks = expand(experiment)
    assert [(t.model_id, t.seed) for t in tasks] == [
        ("tiny-mlp", 0), ("tiny-mlp", 1), ("tiny-mlp", 2), ("tiny-cnn", 0), ("tiny-cnn", 1), ("tiny-cnn", 2)
    ]
    assert all(t.spec.training.epochs == 1 for t in tasks)  # the defaults override the spec's 2


def test_builtin_experiments_all_parse():
    names = set(builtin_experiments())
    assert {"quick", "seed-000", "seed-001", "seed-002", "seed-003", "seed-004", "seeds-all"} <= names
    for name in names:
        experiment, _ = load_experiment(name)
        assert expand(experiment)
    seeds_all, _ = load_experiment("seeds-all")
    assert len({t.model_id for t in expand(seeds_all)}) == 35
    seed_002, _ = load_experiment("seed-002")
    assert seed_002.protocol == "test"  # the notebooks validated on the test set


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"modles": []}, "field 'modles': unknown field (did you mean 'models'?)"),
        ({"protocol": "holdout"}, "field 'protocol'"),
        ({"models": [{"model": "s000-m99"}]}, "unknown model 's000-m99' (did you mean"),
        ({"models": [{"model": "s000-m1", "spec": TINY_MLP}]}, "exactly one of 'model'"),
        ({"seeds": [1, 1]}, "'seeds' has duplicates"),
        ({"defaults": {"epochs": 0}}, "field 'defaults.epochs'"),
        ({"models": [{"model": "s000-m1", "optimizer": "adamm"}]}, "unknown optimizer 'adamm' (did you mean 'adam'?)"),
    ],
)
def test_bad_experiment_files_name_the_problem(tmp_path, tiny_data_dir, change, fragment):
    data = {**tiny_experiment(tiny_data_dir), **change}
    path = write_experiment(tmp_path, data)
    with pytest.raises(SpecError) as info:
        load_experiment(path)
    message = str(info.value)
    assert str(path) in message and fragment in message and "\n" not in message


def test_tiny_experiment_end_to_end_and_rerun_trains_nothing(tmp_path, tiny_data_dir):
    experiment = parse_experiment(tiny_experiment(tiny_data_dir))
    with RunStore(tmp_path / "store") as store:
        first = run_experiment(experiment, store)
        assert len(first.trained) == 4 and not first.failed
        runs = store.runs("tiny")
        assert {r.status for r in runs} == {"completed"}
        for record in runs:
            assert store.history(record.id)["epoch"] == [1]
            labels, predicted = store.predictions(record.id)
            assert len(labels) == len(predicted) == 100
            assert record.final["params"] > 0 and 0.0 <= record.final["test_acc"] <= 1.0
            assert (store.run_dir(record.id) / "model.json").exists()  # the run folder is a model folder
            assert not (store.run_dir(record.id) / "checkpoint").exists()
        second = run_experiment(experiment, store)
        assert second.trained == [] and len(second.skipped_finished) == 4


def test_more_epochs_is_a_different_run(tmp_path, tiny_data_dir):
    with RunStore(tmp_path / "store") as store:
        run_experiment(parse_experiment(tiny_experiment(tiny_data_dir, seeds=(0,))), store)
        outcome = run_experiment(parse_experiment(tiny_experiment(tiny_data_dir, epochs=2, seeds=(0,))), store)
        assert len(outcome.trained) == 2  # changed settings → new identity, old runs kept
        assert len(store.runs("tiny")) == 4



def _assert_store_complete(store_dir: Path, name: str, runs: int, epochs: int) -> None:
    with RunStore(store_dir) as store:
        records = store.runs(name)
        assert len(records) == runs
        identities = {(r.model_id, r.seed) for r in records}
        assert len(identities) == runs  # each (model, seed) stored once
        for record in records:
            assert record.status == "completed", (record.model_id, record.seed, record.status, record.error)
            assert store.history(record.id)["epoch"] == list(range(1, epochs + 1))  # no duplicate epochs


def test_sigkill_mid_experiment_then_rerun_completes_everything_once(tmp_path):
    from mnistlab.data.synthetic import synthetic_dataset, write_dataset

    data_dir = write_dataset(synthetic_dataset(n_train=3000, n_test=100, seed=2), tmp_path / "data")
    path = write_experiment(tmp_path, tiny_experiment(data_dir, name="killme", epochs=3, cnn_filters=32))
    store_dir = tmp_path / "store"
    process = spawn_cli("run", str(path), "--store", str(store_dir), "--quiet", "--no-report", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    # Kill once the CNN's first seed has some epochs stored but is not finished.
    while True:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        if (store_dir / "store.sqlite").exists():
            with RunStore(store_dir) as store:
                cnn = [r for r in store.runs("killme") if r.model_id == "tiny-cnn"]
                if cnn and store.history(cnn[0].id)["epoch"]:
                    break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    rerun = spawn_cli("run", str(path), "--store", str(store_dir), "--quiet", "--no-report", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    _assert_store_complete(store_dir, "killme", runs=4, epochs=3)


def test_two_concurrent_runs_share_the_work(tmp_path, tiny_data_dir):
    path = write_experiment(tmp_path, tiny_experiment(tiny_data_dir, name="shared", epochs=2, seeds=(0, 1, 2)))
    store_dir = tmp_path / "store"
    processes = [spawn_cli("run", str(path), "--store", str(store_dir), "--no-report", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in processes]
    for process, (out, err) in zip(processes, outputs):
        assert process.returncode == 0, err
    _assert_store_complete(store_dir, "shared", runs=6, epochs=2)
    # Between them they trained each run exactly once.
    trained = [int(out.split("trained ")[1].split(",")[0]) for out, _ in outputs]
    assert sum(trained) == 6


def test_cli_run_writes_a_report_that_works_in_a_browser(tmp_path, tiny_data_dir):
    """The issue's end-to-end check: run → store → report → the page in headless Chromium."""
    from conftest import artifacts_dir, browser_page

    path = write_experiment(tmp_path, tiny_experiment(tiny_data_dir, name="e2e", epochs=2))
    store_dir = tmp_path / "store"
    process = spawn_cli("run", str(path), "--store", str(store_dir), "--quiet", "--data-dir", str(tiny_data_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    page_path = store_dir / "reports" / "e2e.html"
    assert page_path.exists() and (store_dir / "reports" / "e2e.md").exists()
    again = spawn_cli("run", str(path), "--store", str(store_dir), "--no-report", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, _ = again.communicate(timeout=120)
    assert "trained 0, already done 4" in out
    with browser_page(page_path) as (page, errors):
        assert page.locator("table#comparison tbody tr").count() == 2
        kinds = page.eval_on_selector_all("img.plot", "images => images.map(i => i.dataset.kind)")
        assert {"loss", "accuracy", "val-overlay", "weights", "confusion", "misclassified"} <= set(kinds)
        widths = page.eval_on_selector_all("img.plot", "images => images.map(i => i.complete && i.naturalWidth)")
        assert all(width > 0 for width in widths)
        assert page.locator("#statistics").inner_text().strip()
        assert page.locator("#diagnoses").inner_text().strip()
        page.screenshot(path=str(artifacts_dir(tmp_path) / "e2e-report.png"), full_page=True)
        assert errors == []


def test_notebook_api_runs_and_gives_table_and_figures(tmp_path, tiny_data_dir):
    from matplotlib.figure import Figure

    from mnistlab import api
    from mnistlab.report import comparison_table, epochs_frame, loss_figure, val_overlay_figure

    with api.open_store(tmp_path / "store") as store:
        outcome = api.run(tiny_experiment(tiny_data_dir, name="nb"), store)
        assert len(outcome.trained) == 4
        table = comparison_table(store, "nb")
        assert set(table["model"] if "model" in table else table.index) == {"tiny-mlp", "tiny-cnn"}
        epochs = epochs_frame(store, "nb")
        assert isinstance(loss_figure(epochs, "tiny-cnn"), Figure)
        assert isinstance(val_overlay_figure(epochs), Figure)


def test_run_directory_deleted_mid_experiment_is_survived(tmp_path, tiny_data_dir):
    """Someone removes a run's artifacts folder while it trains: the run still completes consistently."""
    import shutil

    from mnistlab.training.history import Reporter

    experiment = parse_experiment(tiny_experiment(tiny_data_dir, name="rmdir", epochs=3, seeds=(0,)))

    with RunStore(tmp_path / "store") as store:
        class DeleteRunFolder(Reporter):
            def __init__(self, model_id):
                self.model_id = model_id

            def end_epoch(self, epoch, epochs, metrics):
                if epoch == 2:  # the run's own folder, with epoch 1's checkpoint, vanishes mid-run
                    run = next(r for r in store.runs("rmdir") if r.model_id == self.model_id)
                    shutil.rmtree(store.root / "artifacts" / str(run.id))

        outcome = run_experiment(experiment, store, reporter_for=lambda task: DeleteRunFolder(task.model_id))
        assert len(outcome.trained) == 2
        for record in store.runs("rmdir"):
            assert record.status == "completed"
            assert store.history(record.id)["epoch"] == [1, 2, 3]
            assert (store.run_dir(record.id) / "model.json").exists()  # the run folder is a model folder


def test_disk_full_during_a_checkpoint_is_one_clear_error_and_a_rerun_recovers(tmp_path, tiny_data_dir, monkeypatch):
    import errno

    from mnistlab.training import checkpoint
    from mnistlab.errors import MnistlabError

    def disk_full(tensors, path):
        raise OSError(errno.ENOSPC, "No space left on device", path)

    experiment = parse_experiment(tiny_experiment(tiny_data_dir, name="full", seeds=(0,)))
    with RunStore(tmp_path / "store") as store:
        monkeypatch.setattr(checkpoint, "save_file", disk_full)
        with pytest.raises(MnistlabError, match="No space left on device") as info:
            run_experiment(experiment, store)
        assert "\n" not in str(info.value) and "tiny-mlp" in str(info.value)
        failed = store.runs("full")[0]
        assert failed.status == "failed" and "No space left" in failed.error
        assert not list((store.run_dir(failed.id) / "checkpoint").glob(".*"))  # no half-written temp file
        monkeypatch.undo()
        outcome = run_experiment(experiment, store)  # space is back: the failed run is trained again
        assert len(outcome.trained) == 2
        assert {r.status for r in store.runs("full")} == {"completed"}
