"""The events a study emits (runs/events.py): what a listener hears matches what the store holds."""

from __future__ import annotations

import pytest

from mnistlab.errors import MnistlabError
from mnistlab.experiments.definition import parse_experiment
from mnistlab.runs.events import EpochEnded, Events, RoundEnded
from mnistlab.training.history import RunEnd
from mnistlab.runs.runner import run_experiment
from mnistlab.runs.store import RunStore
from test_runner import tiny_experiment


@pytest.mark.parametrize("bundle", [1, 2], ids=["one-at-a-time", "seed-bundles"])
def test_a_listener_hears_every_epoch_and_run_as_the_store_records_them(tmp_path, tiny_data_dir, bundle):
    heard = []
    experiment = parse_experiment(tiny_experiment(tiny_data_dir, name="heard", epochs=2))
    with RunStore(tmp_path / "runs") as store:
        outcome = run_experiment(experiment, store, bundle=bundle, listeners=[heard.append])
        assert len(outcome.trained) == 4
        epochs = [event for event in heard if isinstance(event, EpochEnded)]
        finished = [event for event in heard if isinstance(event, RunEnd)]
        assert len(epochs) == 8 and len(finished) == 4
        assert isinstance(heard[-1], RoundEnded) and heard[-1].experiment == "heard"
        assert set(heard[-1].run_ids) == set(outcome.run_ids) and set(heard[-1].trained) == set(outcome.trained)
        for run in finished:
            record = store.get_run(run.run_id)
            assert (run.model, run.seed, run.status) == (record.model_id, record.seed, record.status)
            assert run.test_acc == record.final["test_acc"] and run.epochs == 2
            own = [event for event in epochs if event.run_id == run.run_id]
            assert [event.epoch for event in own] == [1, 2] and all(event.epochs == 2 for event in own)
            history = store.history(run.run_id)
            assert [event.metrics["val_loss"] for event in own] == history["val_loss"]
            # a run's epochs are heard before it is heard to finish
            assert max(heard.index(event) for event in own) < heard.index(run)


def test_a_rerun_with_nothing_to_train_ends_its_round_and_hears_nothing_else(tmp_path, tiny_data_dir):
    experiment = parse_experiment(tiny_experiment(tiny_data_dir, name="again", epochs=1, seeds=(0,)))
    with RunStore(tmp_path / "runs") as store:
        run_experiment(experiment, store)
        heard = []
        run_experiment(experiment, store, listeners=[heard.append])
    assert len(heard) == 1 and isinstance(heard[0], RoundEnded) and heard[0].trained == ()


def test_a_failed_run_is_heard_as_failed(tmp_path, tiny_data_dir, monkeypatch):
    from mnistlab.runs import local

    def broken(*args, **kwargs):
        raise MnistlabError("the engine refused")

    monkeypatch.setattr(local, "execute_task", broken)
    heard = []
    experiment = parse_experiment(tiny_experiment(tiny_data_dir, name="broken", epochs=1, seeds=(0,)))
    with RunStore(tmp_path / "runs") as store, pytest.raises(MnistlabError, match="the engine refused"):
        run_experiment(experiment, store, listeners=[heard.append])
    assert [type(event) for event in heard] == [RunEnd]
    assert heard[0].status == "failed" and heard[0].error == "the engine refused"


def test_every_listener_hears_each_event_in_order():
    first, second = [], []
    events = Events([first.append, second.append])
    for number in range(3):
        events.emit(RoundEnded("study", (number,)))
    assert first == second and [event.run_ids for event in first] == [(0,), (1,), (2,)]


def test_api_run_hands_its_listeners_the_study_s_events(tmp_path, tiny_data_dir):
    from mnistlab import api

    heard = []
    outcome = api.run(tiny_experiment(tiny_data_dir, name="viaapi", epochs=1, seeds=(0,)), tmp_path / "runs",
                      listeners=[heard.append])
    assert [type(event).__name__ for event in heard] == ["EpochEnded", "RunEnd", "EpochEnded", "RunEnd",
                                                         "RoundEnded"]
    assert heard[-1].trained == tuple(outcome.trained)
