"""The until-decided driver (runs/sequential.py) on a synthetic study: a fake trainer writes runs
with chosen accuracies into a real store, so rounds, scheduling, stopping and the budget are tested
without training; one test goes through the real runner on tiny generated data."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from mnistlab.analysis.sequential import DIFFERENT, EQUIVALENT
from mnistlab.errors import MnistlabError
from mnistlab.experiments.definition import Experiment, expand
from mnistlab.runs.sequential import (CONFIG_KEY, STOP_BUDGET, STOP_DECIDED, STOP_MAX_SEEDS, UntilDecided,
                                      parse_budget, run_until_decided, seed_schedule, stored_settings, study_state)
from mnistlab.runs.store import RunStore
from mnistlab.runs.tasks import RunOutcome, stored_runs
from mnistlab.training.history import COMPLETED

TEST_IMAGES = 10_000


def fake_trainer(means: dict[str, float], spread: float = 0.0005, log: list | None = None):
    """A train_round that 'trains' every pending task at once: test_acc = mean + seeded noise."""

    def train(sub: Experiment, store: RunStore) -> RunOutcome:
        tasks = expand(sub)
        outcome, pending = stored_runs(sub, store, tasks)
        for task, record in pending:
            rng = np.random.default_rng(zlib.crc32(f"{task.model_id}/{task.seed}".encode()))
            errors = int(round((1 - means[task.model_id] - spread * rng.standard_normal()) * TEST_IMAGES))
            acc = 1 - errors / TEST_IMAGES
            labels = (np.arange(TEST_IMAGES) % 10).astype(np.uint8)
            predicted = labels.copy()
            predicted[:errors] = (predicted[:errors] + 1) % 10
            store.claim_run(record.id, "fake")
            store.record_epoch(record.id, 1, {"val_acc": acc + 0.0002 * rng.standard_normal(), "val_loss": 1 - acc},
                               owner="fake")
            store.finish_run(record.id, COMPLETED, {"test_acc": acc}, labels, predicted, "cpu", {}, owner="fake")
            outcome.trained.append(record.id)
            if log is not None:
                log.append((task.model_id, task.seed))
        return outcome

    return train


def study(models=("s004-m1", "s004-m2", "s004-m3"), repeats: int = 2) -> Experiment:
    return Experiment.model_validate({"name": "seq", "models": [{"model": m} for m in models], "repeats": repeats})


MEANS = {"s004-m1": 0.985, "s004-m2": 0.95, "s004-m3": 0.98499}  # m2 far off; m3 within 0.01 points of m1


def test_decides_and_adds_seeds_only_to_open_comparisons(tmp_path):
    log: list = []
    with RunStore(tmp_path / "store") as store:
        outcome = run_until_decided(study(), store, fake_trainer(MEANS, log=log), UntilDecided(max_seeds=10))
        assert outcome.stopped == STOP_DECIDED
        state = outcome.state
        assert state.reference == "s004-m1"
        decisions = {q.other: q.decision for q in state.questions}
        assert decisions == {"s004-m2": DIFFERENT, "s004-m3": EQUIVALENT}
        seeds = {model: sorted(seed for m, seed in log if m == model) for model in MEANS}
        assert seeds["s004-m1"] == seeds["s004-m3"] == list(range(len(seeds["s004-m1"])))
        assert len(seeds["s004-m2"]) < len(seeds["s004-m3"]) < 10  # the far model stopped first; fewer than max
        # Recomputed from the store alone, the same story.
        settings = stored_settings(store, "seq")
        again = study_state(store, "seq", list(MEANS), settings)
        assert [(q.other, q.decision, q.trace.looks) for q in again.questions] == \
               [(q.other, q.decision, q.trace.looks) for q in state.questions]
        config = next(r.config for r in store.experiments() if r.name == "seq")
        assert len(config["models"]) == 3 and config["seeds"] == seeds["s004-m1"]  # the whole study, not a round's


def test_stops_at_max_seeds_when_still_open(tmp_path):
    noisy = {"s004-m1": 0.985, "s004-m2": 0.9835}  # 0.15 points apart with a 0.3-point spread: undecidable in 4
    with RunStore(tmp_path / "store") as store:
        outcome = run_until_decided(study(("s004-m1", "s004-m2")), store, fake_trainer(noisy, spread=0.003),
                                    UntilDecided(max_seeds=4))
        assert outcome.stopped == STOP_MAX_SEEDS
        assert [q.decision for q in outcome.state.questions] == [None]
        assert len(store.runs("seq")) == 8


def test_budget_never_starts_a_run_that_cannot_finish(tmp_path):
    now = [0.0]
    log: list = []
    trainer = fake_trainer(MEANS, log=log)

    def timed(sub, store):
        outcome = trainer(sub, store)
        now[0] += 10.0 * len(outcome.trained)  # each run 'takes' its estimate
        return outcome

    with RunStore(tmp_path / "store") as store:
        outcome = run_until_decided(study(), store, timed, UntilDecided(max_seeds=10, budget_seconds=45.0),
                                    estimate=lambda task: 10.0, clock=lambda: now[0])
        assert outcome.stopped == STOP_BUDGET
        assert len(log) == 4 and now[0] <= 45.0  # round 1 needs 6 runs (60 s): the 4 that fit, then stop
        assert outcome.state.reference is None  # round 1 unfinished: no reference, every question open


def test_overrun_starts_the_run_the_budget_cannot_finish_only_when_asked(tmp_path):
    for overrun, runs in ((False, 4), (True, 5)):
        now = [0.0]
        log: list = []
        trainer = fake_trainer(MEANS, log=log)

        def timed(sub, store, trainer=trainer, now=now):
            outcome = trainer(sub, store)
            now[0] += 10.0 * len(outcome.trained)
            return outcome

        with RunStore(tmp_path / f"store-{overrun}") as store:
            outcome = run_until_decided(study(), store, timed,
                                        UntilDecided(max_seeds=10, budget_seconds=45.0, overrun=overrun),
                                        estimate=lambda task: 10.0, clock=lambda: now[0])
        # Round 1 needs 6 runs of 10 s in a 45 s budget: 4 fit; asked to overrun, the 5th starts at 40 s.
        assert outcome.stopped == STOP_BUDGET and len(log) == runs, (overrun, len(log))


def test_factor_grid_schedules_open_variants_through_subset(tmp_path):
    grid = Experiment.model_validate({"name": "seq", "repeats": 2, "models": [
        {"model": "s004-m1", "vary": {"dropout": {"off": {"dropout": 0.0}, "on": {"dropout": 0.2}}}},
        {"model": "s004-m2"}]})
    ids = [task.model_id for task in expand(grid) if task.seed == 0]
    means = {ids[0]: 0.985, ids[1]: 0.98499, ids[2]: 0.95}
    log: list = []
    with RunStore(tmp_path / "store") as store:
        outcome = run_until_decided(grid, store, fake_trainer(means, log=log), UntilDecided(max_seeds=10))
        assert outcome.stopped == STOP_DECIDED
        models = [q for q in outcome.state.questions if q.kind == "model"]
        assert {q.other for q in models} == set(ids) - {outcome.state.reference}
        (effect,) = [q for q in outcome.state.questions if q.kind == "factor"]
        assert (effect.reference, effect.other, effect.decision) == ("dropout=on", "dropout=off", EQUIVALENT)
        assert outcome.state.design.family == 3  # two model comparisons and one main effect
        assert sum(1 for m, _ in log if m == ids[2]) < sum(1 for m, _ in log if m == ids[1])
        # The effect's differences are the grid's level means per seed, over every seed all variants share.
        accuracies = {(r.model_id, r.seed): r.final["test_acc"] * 100 for r in store.runs("seq")}
        shared = [s for s in outcome.state.schedule if (ids[0], s) in accuracies and (ids[1], s) in accuracies]
        assert effect.differences == pytest.approx([accuracies[(ids[1], s)] - accuracies[(ids[0], s)] for s in shared])


def test_settings_and_budget_parsing():
    assert parse_budget("30m") == 1800 and parse_budget("1h30m") == 5400 and parse_budget("90s") == 90
    assert parse_budget("20") == 1200 and parse_budget(None) is None
    for bad in ("soon", "0m", "-5", "m"):
        with pytest.raises(MnistlabError, match="--budget"):
            parse_budget(bad)
    with pytest.raises(MnistlabError, match="--max-seeds"):
        UntilDecided(max_seeds=1).check()
    with pytest.raises(MnistlabError, match="--margin"):
        UntilDecided(margin=-0.1).check()
    assert seed_schedule([5, 2], 5) == [5, 2, 6, 7, 8]
    assert seed_schedule([0], 1) == [0, 1]  # at least two seeds


def test_one_model_is_refused(tmp_path):
    with RunStore(tmp_path / "store") as store, pytest.raises(MnistlabError, match="only one"):
        run_until_decided(study(("s004-m1",)), store, fake_trainer(MEANS), UntilDecided())
    assert CONFIG_KEY == "until_decided"


def test_cli_until_decided_trains_through_the_real_runner(tiny_data_dir, tmp_path):
    from cli_driver import run_cli
    from test_runner import tiny_experiment, write_experiment

    path = write_experiment(tmp_path, tiny_experiment(tiny_data_dir, name="tiny-seq", epochs=1, seeds=(0, 1)))
    result = run_cli("run", path, "--store", tmp_path / "store", "--until-decided", "--max-seeds", "3",
                     "--margin", "50", "--quiet", "--no-report")
    assert result.exit_code == 0, result.stderr
    with RunStore(tmp_path / "store") as store:
        runs = store.runs("tiny-seq")
        assert {run.status for run in runs} == {COMPLETED}
        assert 4 <= len(runs) <= 6 and {run.seed for run in runs} <= {0, 1, 2}
        settings = stored_settings(store, "tiny-seq")
        assert settings["max_seeds"] == 3 and settings["margin"] == 50
        state = study_state(store, "tiny-seq", ["tiny-mlp", "tiny-cnn"], settings)
        assert state.reference in ("tiny-mlp", "tiny-cnn") and len(state.questions) == 1


def test_report_tells_the_story(tmp_path):
    from mnistlab import api
    from mnistlab.report.sequential import until_decided_section

    two = {"s004-m1": MEANS["s004-m1"], "s004-m2": MEANS["s004-m2"]}
    with RunStore(tmp_path / "store") as store:
        run_until_decided(study(tuple(two)), store, fake_trainer(two), UntilDecided(max_seeds=10))
    paths = api.report("seq", tmp_path / "store")
    text = paths.markdown.read_text()
    section = text[text.index("## Until decided"):text.index("## Comparison")]
    assert "every decision below is right" in section and "however many" in section
    assert "| s004-m1 vs s004-m2 | different | 2 | 3 |" in section  # decided at round 2, on 3 seeds
    assert "every question was decided" in section
    assert "P(s004-m1 &gt; s004-m2) = 100%" in text  # beside the mean difference (the page escapes ">")
    html = paths.html.read_text()
    assert 'id="until-decided"' in html and "Wilson" in html
    with RunStore(tmp_path / "fixed") as store:  # a fixed-seed study has no such section
        fake_trainer(two)(study(tuple(two)), store)
        assert until_decided_section(store, "seq") is None


def test_report_names_what_stayed_open(tmp_path):
    from mnistlab.report.sequential import until_decided_section

    with RunStore(tmp_path / "store") as store:
        run_until_decided(study(), store, fake_trainer(MEANS, spread=0.002), UntilDecided(max_seeds=3))
        section = until_decided_section(store, "seq")
    decisions = {row[0]: row[1] for row in section.rows}
    assert decisions == {"s004-m1 vs s004-m2": "different", "s004-m1 vs s004-m3": "open"}
    assert "maximum number of seeds" in section.open_note and "Still open: s004-m1 vs s004-m3;" in section.open_note


def test_outperform_counts_ties_half_and_stays_in_bounds():
    from mnistlab.analysis.outperform import outperform

    result = outperform("a", "b", [0.9, 0.8, 0.7, 0.5], [0.8, 0.8, 0.9, 0.4])
    assert result.wins == 2.5 and result.share == 0.625 and 0 <= result.low < result.share < result.high <= 1
    assert outperform("a", "b", [1.0, 1.0], [0.0, 0.0]).high == 1.0


def test_split_per_seed_is_part_of_the_run_identity():
    from mnistlab.runs.tasks import task_config

    base = {"name": "s", "models": [{"model": "s004-m1"}], "seeds": [0, 3]}
    fixed = expand(Experiment.model_validate(base))
    per_seed = expand(Experiment.model_validate({**base, "split": "per-seed"}))
    assert [t.split_seed for t in fixed] == [None, None] and "split_seed" not in fixed[0].run_config()
    assert [t.split_seed for t in per_seed] == [0, 3]
    assert [task_config(t, None).split_seed for t in per_seed] == [0, 3]
    assert [task_config(t, None).split_seed for t in fixed] == [0, 0]  # today's split, unchanged
    assert per_seed[1].run_config() != fixed[1].run_config()  # another split, another run
    with pytest.raises(ValueError, match="protocol: split"):
        Experiment.model_validate({**base, "split": "per-seed", "protocol": "test"})


def test_split_seeds_draw_different_validation_sets(tiny_dataset):
    from mnistlab.data.datasets import stratified_split

    first, second = (stratified_split(tiny_dataset.train_labels, 0.1, seed)[1] for seed in (0, 3))
    assert len(first) == len(second) and not bool((first == second).all())


def test_main_effects_of_a_two_factor_grid_average_over_the_other_factor(tmp_path):
    grid = Experiment.model_validate({"name": "seq", "repeats": 3, "models": [
        {"model": "s004-m1", "vary": {"dropout": {"off": {"dropout": 0.0}, "on": {"dropout": 0.2}},
                                      "width": [128, 256]}}]})
    tasks = [task for task in expand(grid) if task.seed == 0]
    # Additive means: dropout on costs 1 point, width 256 gains 0.5, whatever the other factor.
    means = {t.model_id: 0.97 - 0.01 * (dict(t.factors)["dropout"] == "on") + 0.005 * (dict(t.factors)["width"] == "256")
             for t in tasks}
    with RunStore(tmp_path / "store") as store:
        outcome = run_until_decided(grid, store, fake_trainer(means, spread=0.0002), UntilDecided(max_seeds=6))
    effects = {q.reference: q for q in outcome.state.questions if q.kind == "factor"}
    assert set(effects) == {"dropout=on", "width=256"}
    assert effects["dropout=on"].decision == effects["width=256"].decision == DIFFERENT
    assert abs(effects["dropout=on"].trace.looks[-1].mean + 1.0) < 0.1  # -1 point, averaged over width
    assert abs(effects["width=256"].trace.looks[-1].mean - 0.5) < 0.1


def test_budget_estimates_come_from_a_probe_then_from_measured_runs(tmp_path, monkeypatch):
    from mnistlab.runs import sequential
    from mnistlab.training import cost

    probed = []

    def fake_probe(spec, **options):
        probed.append((spec.id, options["seconds"]))
        return cost.Throughput(spec.id, "fp32", "test", 1, 128, 60_000.0, 10, 80_000.0, 1000, False, 0.1)

    monkeypatch.setattr(cost, "probe_throughput", fake_probe)
    estimate = sequential.probe_estimator("mnist")
    task = expand(study(("s004-m1", "s004-m2")))[0]
    seconds = estimate(task)
    assert seconds == estimate(task) and probed == [("s004-m1", sequential.BUDGET_PROBE_SECONDS)]  # cached
    # 54,000 training images at 60,000/s plus the evaluations, per epoch: about a second an epoch
    assert task.spec.training.epochs * 0.9 < seconds < task.spec.training.epochs * 1.5
    with RunStore(tmp_path / "store") as store:  # once a model has finished runs, their durations count
        fake_trainer(MEANS)(study(("s004-m1", "s004-m2")), store)
        assert set(sequential.measured_seconds(store, "seq")) == {"s004-m1", "s004-m2"}


def test_a_rerun_continues_where_the_budget_stopped(tmp_path):
    log: list = []
    with RunStore(tmp_path / "store") as store:
        first = run_until_decided(study(), store, fake_trainer(MEANS, log=log),
                                  UntilDecided(max_seeds=10, budget_seconds=25.0), estimate=lambda task: 10.0)
        assert first.stopped == STOP_BUDGET and len(log) == 2
        again = run_until_decided(study(), store, fake_trainer(MEANS, log=log), UntilDecided(max_seeds=10))
        assert again.stopped == STOP_DECIDED
        assert len(log) == len(set(log))  # nothing trained twice


def test_api_checks_settings_before_any_training(tmp_path):
    from mnistlab import api

    for options, words in ((dict(budget="soon"), "--budget"), (dict(max_seeds=1), "--max-seeds"),
                           (dict(margin=-1), "--margin")):
        with pytest.raises(MnistlabError, match=words):
            api.run_until_decided("quick", tmp_path / "store", **options)
    assert not (tmp_path / "store").exists()


def test_budget_on_a_dataset_folder_says_why_it_cannot_estimate(tmp_path):
    from mnistlab.runs.sequential import probe_estimator

    task = expand(Experiment.model_validate({"name": "s", "dataset": str(tmp_path), "models": [{"model": "s004-m1"}]}))[0]
    with pytest.raises(MnistlabError, match="--budget: cannot estimate model 's004-m1'"):
        probe_estimator(str(tmp_path))(task)
