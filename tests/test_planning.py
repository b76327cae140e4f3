"""Before and while training: `run --dry-run` writes nothing, and `--bundle auto` chooses K from its probe."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import yaml

from cli_driver import run_cli
from mnistlab import api
from mnistlab.experiments.definition import expand, parse_experiment
from mnistlab.runs.store import RunStore
from mnistlab.training.bundle import AUTO_MIN_GAIN, AUTO_ROUNDS, choose_bundle

from conftest import TINY_CNN

PROBE = 0.2  # seconds: a dry run's estimate is not what these tests check, only what it lists and writes


def experiment(seeds=(0, 1, 2), dataset: str = "mnist") -> dict:
    return {"name": "planned", "dataset": dataset, "protocol": "split", "defaults": {"epochs": 1, "device": "cpu"},
            "seeds": list(seeds), "models": [{"spec": yaml.safe_load(TINY_CNN)}]}


def database(root: Path) -> list:
    with sqlite3.connect(root / "store.sqlite") as conn:
        return [conn.execute(f"SELECT * FROM {table}").fetchall() for table in ("experiments", "runs", "epochs")]


def test_a_dry_run_creates_no_store(tmp_path):
    path = tmp_path / "planned.yaml"
    path.write_text(yaml.safe_dump(experiment()))
    result = run_cli("run", path, "--dry-run", "--probe-seconds", PROBE, "--store", tmp_path / "runs")
    assert result.exit_code == 0, result
    assert "3 run(s) to train, 0 already done" in result.stdout and "tiny-cnn" in result.stdout
    assert not (tmp_path / "runs").exists()


def test_a_dry_run_lists_only_what_is_not_done_and_writes_nothing(tmp_path):
    study = parse_experiment(experiment())
    root = tmp_path / "runs"
    with RunStore(root) as store:  # seed 1 finished already, seed 0 failed (so still to train)
        store.save_experiment(study.name, study.to_dict())
        for task in expand(study):
            run = store.ensure_run(task.experiment, task.model_id, task.run_config(), task.seed, task.dataset,
                                   task.protocol, 1)
            if task.seed in (0, 1):
                assert store.claim_run(run.id, "test:1")
            if task.seed == 1:
                store.finish_run(run.id, "completed", {"test_acc": 0.9}, None, None, "cpu", {})
            elif task.seed == 0:
                store.fail_run(run.id, "crashed")
    before = database(root)
    plan = api.dry_run(experiment(), root, probe_seconds=PROBE)
    assert plan.done == 1 and [(model.model_id, model.seeds) for model in plan.planned] == [("tiny-cnn", (0, 2))]
    assert plan.seconds == pytest.approx(2 * plan.planned[0].estimate.seconds) and plan.seconds > 0
    assert database(root) == before and not (root / "artifacts").exists()


# -- --bundle auto's choice, with an injected probe (no timing) -------------------------------------------------


def probe_of(rates: dict[int, float], calls: list[int]):
    def probe(k: int) -> float:
        calls.append(k)
        return rates[k]
    return probe


def test_auto_keeps_one_seed_at_a_time_when_bundles_are_slower():
    calls: list[int] = []
    choice = choose_bundle(8, 100, probe_of({1: 1000.0, 2: 700.0, 4: 640.0, 8: 600.0}, calls))
    assert choice.k == 1 and calls == [1, 2, 4, 8] * AUTO_ROUNDS  # interleaved rounds
    assert "K=8: 600" in choice.note() and "chose K = 1" in choice.note()


def test_auto_takes_the_fastest_bundle_when_it_clearly_pays():
    calls: list[int] = []
    choice = choose_bundle(8, 100, probe_of({1: 1000.0, 2: 1600.0, 4: 2500.0, 8: 2100.0}, calls))
    assert choice.k == 4


def test_auto_judges_by_the_median_of_interleaved_probes():
    # One lucky probe of K=8 (a load spike during the others) does not make a bundle.
    answers = iter([1000.0, 990.0, 2000.0, 1010.0, 980.0, 600.0, 1005.0, 985.0, 610.0])  # K=1, 2, 8 per round
    choice = choose_bundle(8, 8, lambda k: next(answers) if k in (1, 2, 8) else 0.0)
    assert choice.k == 1 and choice.rates == {1: 1005.0, 2: 985.0, 4: 0.0, 8: 610.0}


def test_auto_needs_more_than_noise_to_bundle():
    rates = {1: 1000.0, 2: 1000.0 * AUTO_MIN_GAIN * 0.99, 3: 900.0}
    assert choose_bundle(3, 100, probe_of(rates, [])).k == 1


def test_auto_probes_only_what_memory_allows_and_nothing_for_one_seed():
    calls: list[int] = []
    assert choose_bundle(8, 2, probe_of({1: 1.0, 2: 5.0}, calls), rounds=1).k == 2 and calls == [1, 2]
    calls.clear()
    choice = choose_bundle(1, 100, probe_of({}, calls))
    assert choice.k == 1 and calls == [] and "nothing probed" in choice.note()


def test_the_bundle_probe_measures_one_seed_and_a_bundle():
    from mnistlab.spec.parse import parse_model
    from mnistlab.training.cost import probe_bundle

    spec = parse_model(yaml.safe_load(TINY_CNN))
    assert probe_bundle(spec, 1, seconds=PROBE, device="cpu") > 0
    assert probe_bundle(spec, 3, seconds=PROBE, device="cpu") > 0


def test_auto_writes_its_probe_into_the_run_notes(tmp_path, tiny_data_dir, monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr("mnistlab.runs.local.probe_bundle",
                        lambda spec, k, **options: calls.append(k) or {1: 900.0, 2: 500.0}[k])
    with RunStore(tmp_path / "runs") as store:
        outcome = api.run(experiment(seeds=(0, 1), dataset=str(tiny_data_dir)), store, bundle="auto")
        runs = store.runs("planned")
    assert len(outcome.trained) == 2 and calls == [1, 2] * AUTO_ROUNDS
    for run in runs:
        assert run.status == "completed"
        assert any("bundle auto" in note and "chose K = 1" in note for note in run.notes)
