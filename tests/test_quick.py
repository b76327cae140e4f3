"""The README's main command on real MNIST: what a newcomer sees first must be worth seeing.

Every outcome pinned here is a property of the study, checked with a margin that rounding
differences between CPUs cannot cross (tests/README.md): the margins measured are in the note of
the change that designed ``quick.yaml`` and in its comments.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from mnistlab import api
from mnistlab.data.datasets import load_dataset
from mnistlab.report import (comparison_table, experiment_conclusions, load_experiment, load_predictions,
                             model_diagnoses, write_report)
from mnistlab.report.frame import comparison_from
from mnistlab.analysis.ranking import best_model, statistics

from conftest import artifacts_dir, browser_page, needs_mnist

pytestmark = [needs_mnist, pytest.mark.integration, pytest.mark.slow]

# What quick is there to show, as the diagnoses must call it on every seed. The other two models are
# still learning after 4 epochs, their training accuracy near the underfitting rule's 0.97: their labels
# could differ on another CPU, so only what sits far from a threshold is pinned for them (no overfitting,
# nothing stuck or diverged: their val_loss ends within a few percent of its minimum, the rule asks 20%).
OVERFITTING = "s004-m2"
# s004-m1 is a factor study of two variants: without dropout and with dropout 0.1.
SMALL_MLPS = ("s004-m1.dropout-0", "s004-m1.dropout-0.1")
MODELS = ("s002-m1", *SMALL_MLPS, OVERFITTING)
NEVER = {"overfitting", "stuck_at_chance", "diverged"}
CNN, MLPS = "s002-m1", (*SMALL_MLPS, OVERFITTING)
SEEDS = 3  # enough for an interval over seeds to mean something
MIN_EPOCHS = 4
# The CNN's lead over each MLP: Holm-adjusted McNemar p below this, and the seed-level 95% CI's lower
# bound above this many points (issue 17). Both are far from what any CPU measures (see quick.yaml).
CLEAR_P, CLEAR_LOW_POINTS = 0.001, 0.5
# The honest null: dropout 0.1 on the small MLP. Pinned as "not significant" (Holm-adjusted p at least
# ALPHA = 0.05) on test accuracy; the Zen 3 CPU measured p = 0.96, so another CPU's rounding has a long way
# to go before the pin breaks (issue 17 asks p >= 0.3 on the machine that designed it).
NOISE_MIN_P = 0.05


@pytest.fixture(scope="module")
def quick_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("quick")
    # CI has just run the README's main command (`run quick`) in this checkout: MNISTLAB_QUICK_STORE names
    # its store, and a copy of it is checked here instead of training quick a second time. api.run below
    # still trains whatever the copy lacks (a run of another config is another run), so a stale store
    # can only cost time, never pass a test it should fail.
    given = os.environ.get("MNISTLAB_QUICK_STORE")
    if given and (Path(given) / "store.sqlite").is_file():
        shutil.copytree(given, root / "runs", ignore=shutil.ignore_patterns("reports"))
    with api.open_store(root / "runs") as store:
        outcome = api.run("quick", store)
        assert not outcome.failed and not outcome.skipped_claimed
        report = write_report(store, "quick", root / "reports", dataset=load_dataset("mnist"))
        yield store, report


@pytest.fixture(scope="module")
def quick_statistics(quick_store):
    store, _ = quick_store
    data = load_experiment(store, "quick")
    table = comparison_from(data)
    best = best_model(table)
    return statistics(data.runs, table["model"].tolist(), best, lambda ids: load_predictions(store, ids))


def test_every_quick_run_stored_at_least_four_epochs(quick_store):
    store, _ = quick_store
    runs = store.runs("quick")
    assert {run.model_id for run in runs} == set(MODELS) and len(runs) == SEEDS * len(MODELS)
    for run in runs:
        assert run.status == "completed"
        history = store.history(run.id)
        assert len(history["epoch"]) >= MIN_EPOCHS, run.model_id
        assert all(0 <= acc <= 1 for acc in history["train_eval_acc"])


def test_quick_diagnoses_say_what_each_model_is_there_to_show_on_every_seed(quick_store):
    store, _ = quick_store
    table = comparison_table(store, "quick").set_index("model")
    assert table.at[OVERFITTING, "diagnosis"] == f"overfitting ({SEEDS} of {SEEDS} seeds)"
    diagnoses = model_diagnoses(load_experiment(store, "quick"))
    for model in MODELS:
        if model != OVERFITTING:
            assert len(diagnoses[model].seeds) == SEEDS
            assert all(NEVER.isdisjoint(seed.codes.split(", ")) for seed in diagnoses[model].seeds), diagnoses[model].text
    # No figure is compared with a notebook run under another protocol (a factor variant is no notebook's
    # model: it shows no notebook figure at all).
    shown = table[table["reference_test_acc"].notna()]
    assert set(shown.index) == {CNN, OVERFITTING}
    assert all(shown["reference_differences"].str.contains(" on 60,000", regex=False))


def test_the_cnn_clearly_beats_the_mlps(quick_statistics):
    assert quick_statistics.best == CNN
    against = {comparison.b: comparison for comparison in quick_statistics.comparisons}
    assert set(against) == set(MLPS)
    for mlp in MLPS:
        comparison = against[mlp]
        assert comparison.established and len(comparison.common_seeds) == SEEDS
        assert comparison.p_adjusted < CLEAR_P, (mlp, comparison.p_adjusted)
        assert comparison.difference.low * 100 > CLEAR_LOW_POINTS, (mlp, comparison.difference)


def test_quick_conclusions_state_an_established_difference(quick_store):
    store, _ = quick_store
    text = experiment_conclusions(store, "quick").text()
    assert f"{CNN} is more accurate than" in text and "95% CI" in text and "Holm-adjusted" in text
    assert "survive Holm's correction" in text


def test_quick_conclusions_state_an_honest_null(quick_store):
    from mnistlab.report.factors import factor_study

    store, _ = quick_store
    study = factor_study(load_experiment(store, "quick").runs)
    assert study is not None
    (dropout,) = study.main_effects("test_acc")
    assert (dropout.factor, dropout.level, dropout.reference) == ("dropout", "0.1", "0")
    assert not dropout.significant and dropout.p_adjusted >= NOISE_MIN_P, dropout
    assert dropout.low < 0 < dropout.high
    text = experiment_conclusions(store, "quick").text()
    assert "Changing dropout from 0 to 0.1 changes test accuracy by" in text
    assert "not distinguishable from noise; the study could have detected about" in text


def test_quick_page_shows_every_curve(quick_store, tmp_path):
    _, report = quick_store
    with browser_page(report.html) as (page, errors):
        curves = page.eval_on_selector_all(
            "img.plot[data-kind=loss], img.plot[data-kind=accuracy]",
            "images => images.map(i => i.complete && i.naturalWidth)",
        )
        assert len(curves) == 2 * len(MODELS) and all(width > 0 for width in curves)
        assert "different protocol" in page.locator("table#comparison").inner_text()
        page.screenshot(path=str(artifacts_dir(tmp_path) / "quick-report.png"), full_page=True)
        assert errors == []
